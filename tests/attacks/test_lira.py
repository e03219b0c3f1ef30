"""tfdp.attacks.lira: the likelihood-ratio attack finds leaks, stays at chance without one, exact plumbing.

Most tests use NumPy fake models (instant to "train"): each one knows which pool
examples it was trained on (column 0 of x is the example's index) and draws its own
per-example noise from the seed it is given, so the amount of membership leakage is
set exactly by the test.
"""

import json

import numpy as np
import pytest
import scipy.stats

import tfdp
from tfdp.attacks.lira import (
    ASSUMPTIONS,
    OFFLINE,
    ONLINE,
    LiraReport,
    lira,
    lira_from_statistics,
    membership_matrix,
)
from tfdp.attacks.roc_plot import plot_log_roc

NUM_CLASSES = 10


def _pool(num_examples, seed=0):
    """x = (example index, a noise feature); y = random labels; a per-example difficulty."""
    rng = np.random.default_rng(seed)
    x = np.stack([np.arange(num_examples), rng.normal(size=num_examples)], axis=1).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, num_examples)
    difficulty = rng.normal(0.0, 2.0, num_examples)  # per-example logit offset shared by all models
    return x, y, difficulty


def _probabilities(p_true, labels):
    """(n, NUM_CLASSES) probabilities: p_true on the label, the rest spread evenly."""
    out = np.repeat(((1.0 - p_true) / (NUM_CLASSES - 1))[:, None], NUM_CLASSES, axis=1)
    out[np.arange(len(labels)), labels] = p_true
    return out


class _FakeModel:
    """Remembers its training examples; has its own noise per example, drawn from `seed`."""

    def __init__(self, train_data, seed, labels):
        x_train, _ = train_data
        self.labels = labels  # label lookup table, keyed by example index
        self.member = np.zeros(len(labels), dtype=bool)
        self.member[np.asarray(x_train)[:, 0].astype(int)] = True
        self.noise = np.random.default_rng(seed).normal(size=len(labels))

    def __call__(self, x, training=False):
        index = np.asarray(x)[:, 0].astype(int)
        return _probabilities(self.p_true(index), self.labels[index])


class _Memorizer(_FakeModel):
    """p_y ~ 0.99 on its training examples, ~0.5 on the others."""

    def p_true(self, index):
        seen = 0.99 + 0.003 * np.clip(self.noise[index], -3, 3)
        unseen = 0.5 + 0.05 * np.clip(self.noise[index], -3, 3)
        return np.where(self.member[index], seen, unseen)


class _Leaky(_FakeModel):
    """Logit of p_y = difficulty + noise (sd 1) + `leak` if trained on the example."""

    def __init__(self, train_data, seed, labels, difficulty, leak):
        super().__init__(train_data, seed, labels)
        self.difficulty, self.leak = difficulty, leak

    def p_true(self, index):
        logit = self.difficulty[index] + self.noise[index] + self.leak * self.member[index]
        return scipy.special.expit(logit)


def _memorizer_fn(y):
    return lambda data, seed: _Memorizer(data, seed, y)


def _leaky_fn(y, difficulty, leak):
    return lambda data, seed: _Leaky(data, seed, y, difficulty, leak)


# ----- attack power -----


def test_memorizing_model_is_found():
    x, y, _ = _pool(200)
    report = lira(_memorizer_fn(y), (x, y), num_shadow=8, log=None)
    assert report.mode == ONLINE
    assert report.auc > 0.9
    assert report.tpr_at_fpr(0.01) >= 0.5
    assert report.scores.shape == (9 * 200,)


def test_model_that_ignores_its_data_is_at_chance():
    # 16 shadows: with fewer, a target's own in- or out-group is one shadow short, which
    # biases leave-one-out AUCs of a leak-free model slightly below 0.5 (about 0.46 with 8).
    x, y, difficulty = _pool(200, seed=1)
    report = lira(_leaky_fn(y, difficulty, 0.0), (x, y), num_shadow=16, log=None)
    assert report.num_nonmembers > 1500
    assert abs(report.auc - 0.5) < 0.05
    assert report.tpr_at_fpr(0.01) <= 0.03


def test_attack_power_grows_with_the_leak():
    x, y, difficulty = _pool(200, seed=2)
    aucs, tprs = [], []
    for leak in (0.6, 1.2, 2.4):
        report = lira(_leaky_fn(y, difficulty, leak), (x, y), num_shadow=8, seed=5, log=None)
        aucs.append(report.auc)
        tprs.append(report.tpr_at_fpr(0.01))
    # Between chance (0.5) and the memorizer (> 0.9), in order, with room for sampling noise.
    assert 0.53 < aucs[0] < aucs[1] - 0.1 < aucs[2] - 0.2 < 0.97
    assert tprs[0] < tprs[1] < tprs[2]


def test_scores_match_the_likelihood_ratio_computed_by_hand():
    """Leave-one-out, online, one variance per side: each target's score from the others only."""
    rng = np.random.default_rng(7)
    num_models, num_examples = 6, 40
    keep = membership_matrix(num_models, num_examples, rng)
    stats = rng.normal(size=keep.shape) + 1.5 * keep
    report = lira_from_statistics(stats, keep, fix_variance=True)
    assert report.mode == ONLINE
    expected = []
    for target in range(num_models):
        others = np.arange(num_models) != target
        ins = [stats[others & keep[:, i], i] for i in range(num_examples)]
        outs = [stats[others & ~keep[:, i], i] for i in range(num_examples)]
        mu_in = np.array([np.median(s) for s in ins])
        mu_out = np.array([np.median(s) for s in outs])
        sd_in = np.concatenate([s - m for s, m in zip(ins, mu_in)]).std()
        sd_out = np.concatenate([s - m for s, m in zip(outs, mu_out)]).std()
        x = stats[target]
        expected.append(
            scipy.stats.norm.logpdf(x, mu_in, sd_in) - scipy.stats.norm.logpdf(x, mu_out, sd_out)
        )
    np.testing.assert_allclose(report.scores, np.concatenate(expected), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(report.is_member, keep.reshape(-1))
    np.testing.assert_array_equal(report.target_index, np.repeat(np.arange(num_models), num_examples))


# ----- plumbing -----


def test_membership_matrix_is_balanced_and_reproducible():
    for num_models, num_examples in ((7, 51), (8, 30), (2, 9)):
        keep = membership_matrix(num_models, num_examples, np.random.default_rng(0))
        assert keep.shape == (num_models, num_examples) and keep.dtype == bool
        counts = keep.sum(axis=0)
        assert set(counts) <= {num_models // 2, (num_models + 1) // 2}
        if num_models % 2:  # both sizes occur, about half each
            assert abs(int((counts == num_models // 2 + 1).sum()) - num_examples / 2) <= 1
    a = membership_matrix(7, 51, np.random.default_rng(1))
    assert np.array_equal(a, membership_matrix(7, 51, np.random.default_rng(1)))
    assert not np.array_equal(a, membership_matrix(7, 51, np.random.default_rng(2)))


def test_train_fn_receives_the_rows_of_keep_and_distinct_seeds():
    x, y, _ = _pool(51)
    calls = []

    def train_fn(data, seed):
        calls.append((np.asarray(data[0])[:, 0].astype(int), np.asarray(data[1]), seed))
        return _Memorizer(data, seed, y)

    lines = []
    report = lira(train_fn, (x, y), num_shadow=6, seed=11, log=lines.append)
    assert len(calls) == report.num_models == 7
    assert report.keep.shape == (7, 51)
    for k, (ids, labels, seed) in enumerate(calls):
        np.testing.assert_array_equal(ids, np.flatnonzero(report.keep[k]))
        np.testing.assert_array_equal(labels, y[report.keep[k]])
        assert isinstance(seed, int) and seed == 11 + k
    assert set(report.keep.sum(axis=0)) == {3, 4}
    assert lines[2] == f"LiRA: model 3/7 trained ({int(report.keep[2].sum())} examples)"
    # The same seed draws the same halves.
    again = lira(_memorizer_fn(y), (x, y), num_shadow=6, seed=11, log=None)
    np.testing.assert_array_equal(again.keep, report.keep)
    np.testing.assert_allclose(again.scores, report.scores)


def test_num_targets_pools_only_those_targets():
    x, y, _ = _pool(60)
    report = lira(_memorizer_fn(y), (x, y), num_shadow=5, num_targets=2, log=None)
    assert report.num_models == 6 and report.num_targets == 2
    assert report.scores.shape == report.is_member.shape == (120,)
    np.testing.assert_array_equal(report.target_index, np.repeat([0, 1], 60))
    np.testing.assert_array_equal(report.is_member, report.keep[:2].reshape(-1))


@pytest.mark.parametrize("num_shadow", [1, 2])
def test_few_shadows_fall_back_to_the_offline_attack(num_shadow):
    x, y, _ = _pool(80)
    lines = []
    report = lira(_memorizer_fn(y), (x, y), num_shadow=num_shadow, log=lines.append)
    assert report.mode == OFFLINE
    assert "offline" in lines[-1]
    assert np.all(np.isfinite(report.scores))
    assert report.scores.shape == ((num_shadow + 1) * 80,)
    assert 0.0 <= report.auc <= 1.0
    assert report.to_dict()["mode"] == OFFLINE


def test_three_shadows_run_the_online_attack():
    x, y, _ = _pool(80)
    assert lira(_memorizer_fn(y), (x, y), num_shadow=3, log=None).mode == ONLINE


def test_accepts_a_tfdp_dataset():
    x, y, _ = _pool(40)
    dataset = tfdp.data.Dataset(
        name="toy", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5],
        class_names=[str(c) for c in range(NUM_CLASSES)],
    )
    report = lira(_memorizer_fn(y), dataset, num_shadow=3, log=None)
    assert report.num_examples == 40
    assert report.auc > 0.9


# ----- the report -----


def _hand_report():
    # Sorted by score: member, non-member, member, non-member, non-member, member.
    return LiraReport(
        scores=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        is_member=[1, 0, 1, 0, 0, 1],
        target_index=[0] * 6,
        num_models=2,
        num_examples=6,
        num_targets=1,
        mode=ONLINE,
        fix_variance=True,
    )


def test_tpr_at_fpr_and_auc_on_a_hand_computed_example():
    report = _hand_report()
    # ROC points: (0, 1/3), (1/3, 1/3), (1/3, 2/3), (2/3, 2/3), (1, 2/3), (1, 1).
    assert report.tpr_at_fpr(0.001) == pytest.approx(1 / 3)
    assert report.tpr_at_fpr(0.3) == pytest.approx(1 / 3)
    assert report.tpr_at_fpr(1 / 3) == pytest.approx(2 / 3)
    assert report.tpr_at_fpr(0.9) == pytest.approx(2 / 3)
    # Member-above-non-member pairs: 3 + 2 + 0 out of 9.
    assert report.auc == pytest.approx(5 / 9)
    assert report.num_members == 3 and report.num_nonmembers == 3


def test_tpr_at_fpr_rejects_rates_outside_the_open_interval():
    report = _hand_report()
    for fpr in (0, 1, -0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="fpr"):
            report.tpr_at_fpr(fpr)


def test_to_dict_is_json_ready_without_arrays():
    summary = _hand_report().to_dict()
    assert set(summary) == {
        "lira_auc", "lira_tpr_at_0.1pct_fpr", "lira_tpr_at_1pct_fpr", "num_models",
        "num_examples", "num_targets", "num_members", "num_nonmembers", "mode", "fix_variance",
        "assumptions",
    }
    assert summary["lira_auc"] == pytest.approx(5 / 9)
    assert summary["lira_tpr_at_1pct_fpr"] == pytest.approx(1 / 3)
    assert summary["assumptions"] == ASSUMPTIONS and "shadow" in ASSUMPTIONS
    assert json.loads(json.dumps(summary)) == summary
    assert not any(isinstance(v, (list, dict, np.ndarray)) for v in summary.values())


def test_plot_writes_a_png(tmp_path):
    x, y, _ = _pool(60)
    report = lira(_memorizer_fn(y), (x, y), num_shadow=3, log=None)
    path = report.plot(str(tmp_path / "figures" / "lira.png"))
    assert path == str(tmp_path / "figures" / "lira.png")
    with open(path, "rb") as f:
        content = f.read()
    assert content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) > 5000


def test_plot_log_roc_shares_a_figure_and_checks_its_input(tmp_path):
    hand = _hand_report()
    curves = {"hand": (hand.fpr_curve, hand.tpr_curve), "chance": ([0.0, 1.0], [0.0, 1.0])}
    path = plot_log_roc(curves, str(tmp_path / "both.png"), title="two methods")
    assert (tmp_path / "both.png").stat().st_size > 5000 and path.endswith("both.png")
    with pytest.raises(ValueError, match="same length"):
        plot_log_roc({"bad": ([0, 0.5, 1], [0, 1])}, str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="increasing FPR"):
        plot_log_roc({"bad": ([1, 0], [1, 0])}, str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="non-empty"):
        plot_log_roc({}, str(tmp_path / "bad.png"))


# ----- bad input -----


def test_rejects_bad_input_with_helpful_messages():
    x, y, _ = _pool(20)
    train_fn = _memorizer_fn(y)
    with pytest.raises(ValueError, match="20 inputs x but 19 labels"):
        lira(train_fn, (x, y[:-1]), log=None)
    with pytest.raises(ValueError, match="at least 2"):
        lira(train_fn, (x[:1], y[:1]), log=None)
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        lira(train_fn, x, log=None)
    with pytest.raises(ValueError, match="num_shadow.*at least one shadow"):
        lira(train_fn, (x, y), num_shadow=0, log=None)
    with pytest.raises(ValueError, match="num_shadow"):
        lira(train_fn, (x, y), num_shadow=2.5, log=None)
    with pytest.raises(ValueError, match="seed"):
        lira(train_fn, (x, y), seed=-1, log=None)
    with pytest.raises(ValueError, match="num_targets"):
        lira(train_fn, (x, y), num_shadow=2, num_targets=4, log=None)
    with pytest.raises(ValueError, match="train_fn.*callable"):
        lira("not a function", (x, y), log=None)
    with pytest.raises(ValueError, match="returned str for model 0, which is not a model"):
        lira(lambda data, seed: "model.keras", (x, y), num_shadow=2, log=None)
    with pytest.raises(ValueError, match="returned NoneType"):
        lira(lambda data, seed: None, (x, y), num_shadow=2, log=None)


def test_lira_from_statistics_checks_shapes():
    with pytest.raises(ValueError, match="same|shape"):
        lira_from_statistics(np.zeros((3, 5)), np.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="at least one shadow"):
        lira_from_statistics(np.zeros((1, 5)), np.ones((1, 5), dtype=bool))


# ----- a real Keras model -----


@pytest.mark.slow
def test_overfit_keras_mlp_leaks_membership():
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 20)).astype(np.float32)
    y = rng.integers(0, 4, 100)  # random labels: only memorization fits them

    def train_fn(data, seed):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [keras.layers.Input((20,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(4)]
        )
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        # 160 steps over a tiled copy: as many updates as 160 epochs, without the per-epoch cost.
        x_train, y_train = np.tile(data[0], (20, 1)), np.tile(data[1], 20)
        model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)  # 100% train accuracy
        return model

    report = lira(train_fn, (x, y), num_shadow=4, log=None)  # about 13 s on 2 busy cores
    assert report.mode == ONLINE
    assert report.auc > 0.6  # measured 0.98
