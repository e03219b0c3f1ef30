"""tfdp.attacks.membership_inference: attacks that do their job, exact plumbing, clear errors."""

import json

import numpy as np
import pytest
import keras
import tensorflow as tf
from sklearn import datasets, metrics, model_selection
from tfdp._tf_privacy import epsilon_lower_bound as elb

import tfdp
from tfdp import attacks

MEMBERS_PER_MODEL = 100
NUM_MODELS = 3


def _mlp():
    return keras.Sequential(
        [
            keras.layers.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def _train_non_private(x, y, seed):
    keras.utils.set_random_seed(seed)
    model = _mlp()
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # 300 epochs (to 100% train accuracy) as one run of 300 reshuffled passes in batches of 32:
    # the same 1,200 updates without Keras's per-epoch cost (most of the time of 300 epochs).
    passes = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(32)
    model.fit(passes.repeat(300), epochs=1, verbose=0)
    return model


def _train_dp(x, y, seed):
    keras.utils.set_random_seed(seed)
    model = tfdp.make_private(_mlp())
    model.compile(
        tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=20.0, learning_rate=0.1,
                                 insecure_reproducible_seed=seed),
        keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        ),
    )
    model.fit(x, y, epochs=40, batch_size=50, verbose=0)
    return model


@pytest.fixture(scope="module")
def digits():
    """Three disjoint stratified member sets of 100 digits and the other 1497 as non-members."""
    raw = datasets.load_digits()
    x = (raw.data / 16.0).astype(np.float32)
    y = raw.target
    member_idx, nonmember_idx = model_selection.train_test_split(
        np.arange(len(y)), train_size=MEMBERS_PER_MODEL * NUM_MODELS, stratify=y, random_state=0
    )
    folds = model_selection.StratifiedKFold(NUM_MODELS, shuffle=True, random_state=0)
    member_sets = [member_idx[part] for _, part in folds.split(member_idx, y[member_idx])]
    return x, y, member_sets, nonmember_idx


@pytest.fixture(scope="module")
def trained(digits):
    """A non-private and a strongly noised DP model on each member set (same data, same net)."""
    x, y, member_sets, _ = digits
    return [
        (idx, _train_non_private(x[idx], y[idx], seed), _train_dp(x[idx], y[idx], seed))
        for seed, idx in enumerate(member_sets)
    ]


def _loss_auc(model, x, y, members, nonmembers):
    report = attacks.membership_inference(
        model, (x[members], y[members]), (x[nonmembers], y[nonmembers]),
        attack_types=["threshold_attack"], slicing=None,
    )
    return report.per_attack["threshold_attack"]["auc"]


def test_overfit_model_leaks_and_strongly_noised_dp_model_does_not(digits, trained):
    """Loss-threshold AUC: clearly above 0.5 without DP, near 0.5 with strong noise.

    Averaged over three disjoint member sets of 100: with 100 members and 1497
    non-members a single AUC of a model that leaks nothing has standard deviation
    sqrt((n1 + n0 + 1) / (12 n1 n0)) = 0.030, the mean of three 0.017, so 0.56 is
    3.5 standard deviations above chance; the non-private models measured 0.66-0.71.
    """
    x, y, _, nonmembers = digits
    non_private = [_loss_auc(m, x, y, idx, nonmembers) for idx, m, _ in trained]
    private = [_loss_auc(m, x, y, idx, nonmembers) for idx, _, m in trained]
    assert np.mean(non_private) > 0.6, non_private
    assert min(non_private) > 0.55, non_private
    assert np.mean(private) < 0.56, private
    assert max(private) < 0.6, private


def test_threshold_attack_matches_an_independent_loss_auc_and_epsilon_bound(digits, trained):
    x, y, _, nonmembers = digits
    members, model, _ = trained[0]
    report = attacks.membership_inference(
        model, (x[members], y[members]), (x[nonmembers], y[nonmembers]),
        attack_types=["threshold", "threshold-entropy"], slicing=None,
    )
    assert report.from_logits  # a linear last layer: logits

    def losses(idx):
        logits = tf.cast(model(x[idx]), tf.float64)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y[idx], logits).numpy()

    loss_m, loss_n = losses(members), losses(nonmembers)
    is_member = np.r_[np.ones(len(loss_m)), np.zeros(len(loss_n))]
    expected_auc = metrics.roc_auc_score(is_member, -np.r_[loss_m, loss_n])
    threshold = report.per_attack["threshold_attack"]
    assert threshold["auc"] == pytest.approx(expected_auc, abs=1e-6)
    fpr, tpr, _ = metrics.roc_curve(is_member, -np.r_[loss_m, loss_n])
    assert threshold["advantage"] == pytest.approx(np.max(np.abs(tpr - fpr)), abs=1e-6)
    expected_bound = elb.EpsilonLowerBound(loss_m, loss_n, alpha=0.05).compute_epsilon_lower_bound(
        elb.BoundMethod.BAILEY, k=5
    )
    assert threshold["epsilon_lower_bound"] == pytest.approx(max(0.0, expected_bound[0]), rel=1e-6)
    # Headlines are the best over the attacks.
    for key in ("auc", "advantage", "ppv", "epsilon_lower_bound"):
        assert getattr(report, key) == max(m[key] for m in report.per_attack.values())
    assert report.accuracy_members == 1.0 and report.accuracy_nonmembers < 1.0


def test_per_class_slices(digits, trained):
    x, y, _, nonmembers = digits
    members, model, _ = trained[0]
    report = attacks.membership_inference(
        model, (x[members], y[members]), (x[nonmembers], y[nonmembers]),
        attack_types=["threshold_attack", "knn"], slicing="class",
    )
    assert list(report.per_slice) == ["entire_dataset"] + [f"class={c}" for c in range(10)]
    per_class = [report.per_slice[f"class={c}"]["threshold_attack"] for c in range(10)]
    assert sum(m["n_members"] for m in per_class) == len(members)
    assert sum(m["n_nonmembers"] for m in per_class) == len(nonmembers)
    # Trained attacks run on the entire data set only, unless asked for every slice.
    assert "k_nearest_neighbors" in report.per_attack
    assert "k_nearest_neighbors" not in report.per_slice["class=0"]
    everywhere = attacks.membership_inference(
        model, (x[members], y[members]), (x[nonmembers], y[nonmembers]),
        attack_types=["knn"], slicing="class", trained_attacks_per_slice=True,
    )
    assert "k_nearest_neighbors" in everywhere.per_slice["class=0"]


def test_report_serializes_and_plots(digits, trained, tmp_path):
    x, y, _, nonmembers = digits
    members, model, _ = trained[0]
    report = attacks.membership_inference(
        model, (x[members], y[members]), (x[nonmembers], y[nonmembers]),
        attack_types=["threshold_attack", "threshold_entropy_attack"],
    )
    record = json.loads(json.dumps(report.to_dict()))
    assert record["auc"] == pytest.approx(report.auc)
    assert record["per_slice"]["class=3"]["threshold_attack"]["n_members"] == 10
    assert "delta = 0" in record["epsilon_lower_bound_definition"]
    path = report.plot(str(tmp_path / "sub" / "mia.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 1000 and height > 500


def _binary_models(weights, bias):
    logit = keras.Sequential([keras.layers.Input((30,)), keras.layers.Dense(1)])
    sigmoid = keras.Sequential(
        [keras.layers.Input((30,)), keras.layers.Dense(1, activation="sigmoid")]
    )
    for model in (logit, sigmoid):
        model.layers[-1].set_weights([weights, bias])
    return logit, sigmoid


@pytest.fixture(scope="module")
def breast_cancer():
    raw = datasets.load_breast_cancer()
    x = ((raw.data - raw.data.mean(axis=0)) / raw.data.std(axis=0)).astype(np.float32)
    rng = np.random.default_rng(0)
    weights = (0.3 * rng.normal(size=(30, 1))).astype(np.float32)
    return x, raw.target, weights, np.array([0.1], np.float32)


def test_binary_sigmoid_and_logit_models(breast_cancer):
    """One-output binary models (the pneumonia case) work as logits or as probabilities."""
    x, y, weights, bias = breast_cancer
    logit_model, sigmoid_model = _binary_models(weights, bias)
    members, nonmembers = (x[:300], y[:300]), (x[300:], y[300:])
    by_logits = attacks.membership_inference(
        logit_model, members, nonmembers, attack_types=["threshold_attack"], slicing="class"
    )
    by_probs = attacks.membership_inference(
        sigmoid_model, members, nonmembers, attack_types=["threshold_attack"], slicing="class"
    )
    assert by_logits.from_logits and not by_probs.from_logits
    assert by_logits.num_classes == 2 and set(by_logits.per_slice) == {"entire_dataset", "class=0", "class=1"}
    z = (x.astype(np.float64) @ weights + bias)[:, 0]
    loss = keras.losses.binary_crossentropy(y[:, None].astype(np.float64), z[:, None], from_logits=True).numpy()
    expected = metrics.roc_auc_score(np.r_[np.ones(300), np.zeros(len(y) - 300)], -loss)
    assert by_logits.auc == pytest.approx(expected, abs=1e-6)
    assert by_probs.auc == pytest.approx(expected, abs=1e-3)  # float32 sigmoid saturates a little


def test_logits_or_probabilities_declared_wrongly_raise(breast_cancer):
    x, y, weights, bias = breast_cancer
    logit_model, sigmoid_model = _binary_models(weights, bias)
    data = ((x[:100], y[:100]), (x[100:200], y[100:200]))
    with pytest.raises(ValueError, match="contradicts the model's last layer"):
        attacks.membership_inference(logit_model, *data, attack_types=["threshold"], from_logits=False)
    with pytest.raises(ValueError, match="contradicts the model's last layer"):
        attacks.membership_inference(sigmoid_model, *data, attack_types=["threshold"], from_logits=True)

    def scaled_softmax(inputs, training=False):  # a callable without layers: values are checked
        return 2.0 * tf.nn.softmax(tf.concat([logit_model(inputs), -logit_model(inputs)], axis=1))

    with pytest.raises(ValueError, match="not to 1"):
        attacks.membership_inference(scaled_softmax, *data, attack_types=["threshold"], from_logits=False)


def test_dataset_and_batching_do_not_change_the_result(breast_cancer):
    x, y, weights, bias = breast_cancer
    model, _ = _binary_models(weights, bias)
    as_arrays = attacks.membership_inference(
        model, (x[:250], y[:250]), (x[250:], y[250:]), attack_types=["threshold"], batch_size=13
    )
    as_datasets = attacks.membership_inference(
        model,
        tf.data.Dataset.from_tensor_slices((x[:250], y[:250])).batch(7),
        tf.data.Dataset.from_tensor_slices((x[250:], y[250:])).batch(64),
        attack_types=["threshold"],
    )
    # Batching changes the order of float reductions (by ~1e-9), nothing else.
    _assert_same_report(as_arrays.to_dict(), as_datasets.to_dict())


def _assert_same_report(a, b, path="report"):
    """Equal structure and non-float values; floats equal to 1e-6 (relative), NaN where NaN."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{path}: keys differ"
        for key in a:
            _assert_same_report(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: lengths differ"
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same_report(u, v, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12, nan_ok=True), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def test_trained_attacks_find_planted_leakage_and_are_reproducible():
    rng = np.random.default_rng(1)
    n = 150
    labels_m, labels_n = rng.integers(0, 3, n), rng.integers(0, 3, n)
    # Members: the true class gets a large logit; non-members: noise only.
    members = rng.normal(size=(n, 3)) + 4.0 * np.eye(3)[labels_m]
    nonmembers = rng.normal(size=(n, 3))
    kwargs = dict(attack_types=["lr", "knn", "mlp"], slicing=None, from_logits=True)
    state = np.random.get_state()
    first = attacks.membership_inference_from_outputs(members, labels_m, nonmembers, labels_n, **kwargs)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global RNG is restored
    second = attacks.membership_inference_from_outputs(members, labels_m, nonmembers, labels_n, **kwargs)
    assert set(first.per_attack) == {"logistic_regression", "k_nearest_neighbors", "multi_layered_perceptron"}
    for name, metrics_ in first.per_attack.items():
        assert metrics_["auc"] > 0.9, name
        assert metrics_["auc"] == second.per_attack[name]["auc"]


def test_attack_names():
    from tfdp._tf_privacy import mia_data_structures
    AttackType = mia_data_structures.AttackType

    from tfdp.attacks.membership import parse_attack_types

    assert parse_attack_types(None) == attacks.DEFAULT_ATTACK_TYPES
    assert len(attacks.DEFAULT_ATTACK_TYPES) == 6
    assert parse_attack_types(["rf", "RANDOM_FOREST", AttackType.RANDOM_FOREST]) == (AttackType.RANDOM_FOREST,)
    assert parse_attack_types("threshold-entropy") == (AttackType.THRESHOLD_ENTROPY_ATTACK,)


def test_bad_inputs_raise(breast_cancer):
    x, y, weights, bias = breast_cancer
    model, _ = _binary_models(weights, bias)
    members, nonmembers = (x[:100], y[:100]), (x[100:200], y[100:200])
    run = lambda m, n, **kw: attacks.membership_inference(model, m, n, **{"attack_types": ["threshold"], **kw})
    with pytest.raises(ValueError, match="`train_data` is empty"):
        run((x[:0], y[:0]), nonmembers)
    with pytest.raises(ValueError, match="`test_data` is empty"):
        run(members, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="one label per example"):
        run((x[:100], y[:99]), nonmembers)
    with pytest.raises(ValueError, match="Mismatched label shapes"):
        run(members, (x[100:200], np.eye(2)[y[100:200]]))
    with pytest.raises(ValueError, match="does not match a model with 2 classes"):
        run(members, (x[100:200], np.eye(3)[y[100:200]]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        run((x[:100], y[:100] + 1), nonmembers)
    with pytest.raises(ValueError, match="not one-hot"):
        run((x[:100], np.ones((100, 2))), (x[100:200], np.ones((100, 2))))
    with pytest.raises(ValueError, match="Unknown attack type"):
        run(members, nonmembers, attack_types=["gradient_boosting"])
    with pytest.raises(ValueError, match="Unknown slicing"):
        run(members, nonmembers, slicing="by_age")
    with pytest.raises(ValueError, match="unbatched"):
        run(tf.data.Dataset.from_tensor_slices(members), nonmembers)
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        run(x[:100], nonmembers)
    with pytest.raises(ValueError, match="batch_size"):
        run(members, nonmembers, batch_size=0)
    with pytest.raises(ValueError, match="NaN"):
        attacks.membership_inference_from_outputs(np.full(5, np.nan), np.ones(5, int), np.zeros(5), np.ones(5, int))


@pytest.mark.slow
def test_evaluate_script_writes_json_and_plot(tmp_path, run_script):
    """scripts/evaluate.py (in this process) on a saved binary model of the bundled
    breast-cancer data."""
    from tfdp.data import load_dataset

    data = load_dataset("breast_cancer", seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.layers.Input(data.input_shape), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile("adam", "binary_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=3, verbose=0)
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    claim_path = tmp_path / "claim.json"
    claim_path.write_text(json.dumps({"privacy": {"epsilon": 3.0, "delta": 1e-5}}))
    out = tmp_path / "out"
    completed = run_script(
        "evaluate.py", f"--model_path={model_path}", "--dataset=breast_cancer",
        f"--output_dir={out}", f"--privacy_json={claim_path}",
        "--attack_types=threshold,threshold-entropy")
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((out / "evaluation.json").read_text())
    assert record["membership_inference"]["n_members"] == data.num_train
    assert record["membership_inference"]["n_nonmembers"] == data.num_test
    expected = attacks.utility_metrics(model, (data.x_test, data.y_test))
    assert record["utility"]["test"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert record["audit"]["claimed_epsilon"] == 3.0 and isinstance(record["audit"]["consistent"], bool)
    assert (out / "membership_inference.png").stat().st_size > 10_000
