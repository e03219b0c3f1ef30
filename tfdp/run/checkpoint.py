"""A run's model_dir: checkpoints of model, optimizer (with its DP ledger) and epoch.

    <model_dir>/train_config.json   the settings the ledger holds for (a resume must match)
    <model_dir>/checkpoints/        tf.train checkpoints, one per epoch (the latest two kept)
    <model_dir>/metrics.json        the run's metrics record (written by scripts/train.py)

Rerunning the same configuration resumes after the last saved epoch and keeps
counting privacy spent; other privacy settings are refused (the saved ledger would
no longer describe the run).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

import tfdp.training
from tfdp.run.config import LEDGER_KEYS, RunConfig

SETTINGS_FILE = "train_config.json"
CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.json"
# Checkpoint keys of the optimizer's counters (the run saves the optimizer as "optimizer").
# A Keras 3 optimizer is checkpointed by its attributes: `_iterations`, and the DP
# optimizers' ledger `_noisy_steps` and `_dropped_steps`.
COUNTER_KEYS = {
    "applied_steps": "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
    "noisy_steps": "optimizer/_noisy_steps/.ATTRIBUTES/VARIABLE_VALUE",
    "dropped_steps": "optimizer/_dropped_steps/.ATTRIBUTES/VARIABLE_VALUE",
}


def ledger_settings(config: RunConfig) -> Dict[str, Any]:
    """The settings that fix what a saved privacy ledger means."""
    return {k: getattr(config, k) for k in LEDGER_KEYS}


def check_settings(config: RunConfig) -> None:
    """Refuses a model_dir written with other privacy settings; records them in a new one."""
    os.makedirs(config.model_dir, exist_ok=True)
    settings_path = os.path.join(config.model_dir, SETTINGS_FILE)
    settings = ledger_settings(config)
    if os.path.exists(settings_path):
        with open(settings_path) as f:
            saved = json.load(f)
        changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ValueError(
                f"--model_dir={config.model_dir} holds a run with other settings ({details}). "
                "Its privacy ledger only holds for those settings: resume with the same flags, "
                "or use a new --model_dir."
            )
    else:
        with open(settings_path, "w") as f:
            json.dump(settings, f, indent=2)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer (including the DP counters) and the epoch at each epoch end."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch: tf.Variable):
        super().__init__()
        self._manager = manager
        self._epoch = epoch

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._epoch.assign(epoch + 1)
        self._manager.save(checkpoint_number=epoch + 1)


def open_model_dir(config: RunConfig, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                   log: Callable[[str], None] = print) -> Tuple[int, EpochCheckpoint]:
    """Checks the settings, restores the latest checkpoint of config.model_dir.

    Returns (epochs already trained, the callback saving each further epoch).
    """
    check_settings(config)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(config.model_dir, CHECKPOINTS),
                                         max_to_keep=2)
    if manager.latest_checkpoint:
        # Create the optimizer's slots first so every saved value lands immediately.
        optimizer.build(model.trainable_variables)
        if is_legacy_dp_checkpoint(manager.latest_checkpoint, optimizer):
            # Written before the DP optimizer became a wrapper: the model and the epoch load
            # as before, the optimizer by its old variable order.
            restore_legacy_dp_checkpoint(manager.latest_checkpoint, model, optimizer,
                                         epoch=epoch)
        else:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"Resumed from {manager.latest_checkpoint} after epoch {int(epoch.numpy())}.")
    return int(epoch.numpy()), EpochCheckpoint(manager, epoch)


# A checkpoint of today's DP optimizer holds its inner optimizer under this key.
_INNER_STEP_KEY = "optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def is_legacy_dp_checkpoint(checkpoint: str, optimizer: Any) -> bool:
    """True when `checkpoint` holds a DP optimizer written before it became a wrapper.

    Such a checkpoint has the ledger (`_noisy_steps`) but no `inner_optimizer`; a
    `tfdp.DPOptimizer` restores it with `restore_legacy_checkpoint`.
    """
    if not hasattr(optimizer, "restore_legacy_checkpoint"):
        return False
    names = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    return COUNTER_KEYS["noisy_steps"] in names and _INNER_STEP_KEY not in names


class _WithoutOptimizer(tf.__internal__.tracking.Trackable):
    """A model's checkpoint dependencies without its compiled optimizer (restored apart)."""

    def __init__(self, model: keras.Model):
        self._model = model

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = dict(self._model._trackable_children(save_type, **kwargs))  # pylint: disable=protected-access
        children.pop("optimizer", None)
        return children


def restore_legacy_dp_checkpoint(checkpoint: str, model: keras.Model, optimizer: Any,
                                 **others: Any) -> None:
    """Restores a checkpoint written before the DP optimizer became a wrapper.

    `model` (and `others`, e.g. the epoch variable) are restored as checkpointed, under the
    same keys; the DP optimizer, built on the model's variables, by its old variable order
    (`DPOptimizer.restore_legacy_checkpoint`). Raises when something does not match.
    """
    tf.train.Checkpoint(model=_WithoutOptimizer(model), **others).restore(
        checkpoint).expect_partial().assert_existing_objects_matched()
    optimizer.restore_legacy_checkpoint(checkpoint)


def resume_seed(seed: int, epoch: int) -> int:
    """The public random seed of a run resumed after `epoch` epochs: a stream of its own.

    The DP noise and the batches never come from it (they come from secret randomness,
    `tfdp.randomness`, which no seed reaches); it seeds what is public, such as dropout and
    augmentation, so that a resumed run does not repeat its first epochs' draws of those.
    """
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x5EED]).generate_state(1)[0])


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The newest checkpoint of a run's model_dir, or None."""
    return tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINTS))


def checkpoint_counters(checkpoint: str) -> Dict[str, int]:
    """The optimizer's step counters saved in a run's checkpoint.

    A run without a DP optimizer has no noisy or dropped steps (0). A checkpoint
    without the optimizer's step counter (not a tfdp run's, or from the Keras 2
    version of tfdp) is refused: its ledger cannot be checked.
    """
    reader = tf.train.load_checkpoint(checkpoint)
    names = reader.get_variable_to_shape_map()
    if COUNTER_KEYS["applied_steps"] not in names:
        raise ValueError(
            f"Checkpoint {checkpoint} holds no Keras 3 optimizer step counter "
            f"({COUNTER_KEYS['applied_steps']}), so its privacy ledger cannot be checked. Is it "
            "a checkpoint of scripts/train.py (a Keras 2 run's checkpoints do not load in Keras "
            "3: train again)?"
        )
    return {k: int(reader.get_tensor(key)) if key in names else 0
            for k, key in COUNTER_KEYS.items()}


def restore_model(model: keras.Model, checkpoint: str,
                  optimizer: Optional[keras.optimizers.Optimizer] = None) -> keras.Model:
    """The model as the run checkpointed it (itself or its make_private wrap), weights restored.

    A run checkpoints the model it trained: `tfdp.training.make_private(model)` for DP runs on
    the fast path, the plain model otherwise. In Keras 3 the two are tracked under
    different checkpoint paths (a Sequential keeps its layers in an inner functional
    model), so the weights are restored through whichever matches every weight.

    A run with a moving average of the weights (EMA) checkpoints the last weights and the
    average separately, and ends by writing the average into the model: give `optimizer`
    (a fresh one built as the run's, `use_ema=True`) and the restored model holds the
    average too, so it is the model the run evaluated.
    """
    candidates = [model]
    try:
        candidates.insert(0, tfdp.training.make_private(model))  # what DP runs train: tried first
    except ValueError:
        pass  # a model make_private refuses was trained as it is
    errors = []
    for candidate in candidates:
        status = tf.train.Checkpoint(model=candidate).restore(checkpoint).expect_partial()
        try:
            status.assert_existing_objects_matched()
        except AssertionError as error:
            errors.append(f"as {type(candidate).__name__}: {error}")
            continue
        if optimizer is not None and getattr(optimizer, "use_ema", False):
            _write_weight_average(candidate, checkpoint, optimizer)
        return candidate
    raise ValueError(f"Checkpoint {checkpoint} does not hold every weight of the rebuilt "
                     f"model {model.name!r} ({'; '.join(errors)})")


def _write_weight_average(model: keras.Model, checkpoint: str,
                          optimizer: keras.optimizers.Optimizer) -> None:
    """Restores the optimizer's moving average of the weights and writes it into `model`."""
    optimizer.build(model.trainable_variables)
    try:
        if is_legacy_dp_checkpoint(checkpoint, optimizer):
            optimizer.restore_legacy_checkpoint(checkpoint)
        else:
            status = tf.train.Checkpoint(optimizer=optimizer).restore(checkpoint).expect_partial()
            status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise ValueError(f"Checkpoint {checkpoint} does not hold the optimizer's moving average "
                         f"of the weights that the run's settings (EMA) imply: {error}") from error
    optimizer.finalize_variable_values(model.trainable_variables)
