"""One side of test_fresh_process.py: train and save everything, or load it all and go on.

    python fresh_process_checks.py train DIR    # seeds everything, trains, writes every artifact
    python fresh_process_checks.py resume DIR   # a fresh process: the same seeds, every artifact

Both print one JSON line: the noise vector of each step (the model's updates: its inputs are
multiplied by zero, so every clipped gradient is 0 and an update is the noise alone) and the
Poisson batches (example indices) of two passes of the sampler.
"""

import json
import os
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdp  # noqa: E402

N, BATCH, STEPS = 64, 8, 3


def seed_everything():
    """What a user who wants reproducibility does: every seed there is, to 0."""
    random.seed(0)
    np.random.seed(0)
    keras.utils.set_random_seed(0)
    tf.random.set_seed(0)


def build():
    inputs = keras.Input((1,))
    silenced = keras.layers.Lambda(lambda t: t * 0.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, use_bias=False)(silenced))
    return tfdp.make_private(model)


def data():
    return np.arange(N, dtype=np.float32)[:, None], np.arange(N) % 4


def batches_of(dataset, passes=2):
    return [sorted(int(v) for v in xb.numpy()[:, 0]) for _ in range(passes) for xb, _ in dataset]


def steps_of_noise(model, dataset):
    noise = []
    for _ in range(STEPS):
        before = model.get_weights()[0].copy()
        model.fit(dataset.take(1), epochs=1, verbose=0)
        noise.append((model.get_weights()[0] - before).ravel().tolist())
    return noise


def main():
    role, folder = sys.argv[1], sys.argv[2]
    seed_everything()
    x, y = data()
    dataset = tfdp.data.poisson_batches(x, y, BATCH, num_steps=STEPS)
    if role == "train":
        model = build()
        optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                             learning_rate=1.0, expected_batch_size=BATCH)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None))
        noise = steps_of_noise(model, dataset)
        model.save(os.path.join(folder, "model.keras"))
        tf.train.Checkpoint(model=model, optimizer=optimizer).write(os.path.join(folder, "ckpt"))
        privacy = tfdp.accounting.epsilon_from_ledger(optimizer, N)
        tfdp.export.export_saved_model(model, os.path.join(folder, "saved"), "m", privacy=privacy)
        with open(os.path.join(folder, "privacy.json"), "w") as f:
            json.dump(privacy.to_dict(), f, default=str)
    else:
        loaded = keras.models.load_model(os.path.join(folder, "model.keras"), safe_mode=False)
        noise = steps_of_noise(loaded, dataset)
        rebuilt = build()
        optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                             learning_rate=1.0, expected_batch_size=BATCH)
        rebuilt.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None))
        optimizer.build(rebuilt.trainable_variables)
        tf.train.Checkpoint(model=rebuilt, optimizer=optimizer).read(
            os.path.join(folder, "ckpt")).assert_existing_objects_matched()
        tfdp.export.read_privacy(os.path.join(folder, "saved", "m"))
        tf.saved_model.load(os.path.join(folder, "saved", "m", "1"))
        noise += steps_of_noise(rebuilt, dataset)
    print("RESULT " + json.dumps({"noise": noise, "batches": batches_of(dataset)}), flush=True)


if __name__ == "__main__":
    main()
