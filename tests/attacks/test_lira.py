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
from sklearn import metrics

import tfdp
from tfdp.attacks.lira import (
    ASSUMPTIONS,
    OFFLINE,
    ONLINE,
    LiraReport,
    _draw_keep,
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


def _balanced_keep(num_models, num_examples, rng):
    """The design LiRA no longer uses: each example in exactly floor(M/2) or ceil(M/2) models."""
    ranks = rng.random((num_models, num_examples)).argsort(axis=0).argsort(axis=0)
    size = num_models // 2 + (rng.random(num_examples) < 0.5) * (num_models % 2)
    return ranks < size[np.newaxis, :]


def _keep_with_counts(num_models, num_examples, allowed, rng):
    """Independent fair coins, each column redrawn until it holds an allowed number of models."""
    keep = membership_matrix(num_models, num_examples, rng)
    while True:
        bad = ~np.isin(keep.sum(axis=0), allowed)
        if not bad.any():
            return keep
        keep[:, bad] = rng.random((num_models, int(bad.sum()))) < 0.5


def _lira_by_hand(stats, keep, *, online, fix_variance):
    """LiRA's leave-one-out scores written out, with TF Privacy's stand-in for a missing group.

    For each target, an example whose shadows include no "in" (or no "out") model gets,
    in place of that group's median, the average of the medians over the examples that
    have the group (and, one variance per example, the average of their stds); with one
    variance for all, the empty groups just add nothing to it.
    """
    num_models, num_examples = stats.shape
    scores = []
    for target in range(num_models):
        others = np.arange(num_models) != target
        groups = {
            "in": [stats[others & keep[:, i], i] for i in range(num_examples)],
            "out": [stats[others & ~keep[:, i], i] for i in range(num_examples)],
        }
        log_pdf = {}
        for side in ("in", "out") if online else ("out",):
            group = groups[side]
            present = np.array([len(g) > 0 for g in group])
            mu = np.array([np.median(g) if len(g) else np.nan for g in group])
            mu[~present] = mu[present].mean()
            if fix_variance:
                sd = np.concatenate([g - m for g, m in zip(group, mu)]).std()
            else:
                sd = np.array([g.std() if len(g) else np.nan for g in group])
                sd[~present] = sd[present].mean()
            log_pdf[side] = scipy.stats.norm.logpdf(stats[target], mu, sd)
        scores.append(log_pdf["in"] - log_pdf["out"] if online else -log_pdf["out"])
    return np.concatenate(scores)


# ----- attack power -----


def test_memorizing_model_is_found():
    x, y, _ = _pool(200)
    report = lira(_memorizer_fn(y), (x, y), num_shadow=8, log=None)
    assert report.mode == ONLINE
    assert report.auc > 0.9
    assert report.tpr_at_fpr(0.01) >= 0.5
    assert report.scores.shape == (9 * 200,)


def test_model_that_ignores_its_data_is_at_chance():
    # 9 models on 600 examples, 3 of them in turn the target: 1800 pooled pairs per run,
    # 5400 over the three (the scoring time grows with targets * examples, the AUC's
    # precision mostly with the examples). Seeds 100 apart, so that no two runs share a
    # model's noise (model k trains with seed + k). Measured AUCs 0.508, 0.491, 0.484;
    # pooled 0.495. Over 150 simulated runs the sd is 0.015 per run, 0.0075 pooled.
    # With the old membership_matrix (balanced per example) the same runs score 0.487,
    # 0.454, 0.493, pooled 0.479, and fail. But at 8 shadows that bias is only about 0.02
    # on average, so on other seeds it could pass: the independence of the memberships is
    # checked exactly in test_membership_matrix_is_independent_fair_coins_and_reproducible,
    # the bias itself at 7 shadows (0.04) in test_balanced_memberships_bias_the_auc.
    x, y, difficulty = _pool(600, seed=1)
    reports = [
        lira(_leaky_fn(y, difficulty, 0.0), (x, y), num_shadow=8, seed=seed, num_targets=3,
             log=None)
        for seed in (0, 100, 200)
    ]
    for report in reports:
        assert report.mode == ONLINE and report.num_members > 800 and report.num_nonmembers > 800
        assert abs(report.auc - 0.5) < 0.035
        assert report.tpr_at_fpr(0.01) <= 0.03
    pooled = metrics.roc_auc_score(
        np.concatenate([r.is_member for r in reports]), np.concatenate([r.scores for r in reports])
    )
    assert abs(pooled - 0.5) < 0.02


def test_balanced_memberships_bias_the_auc():
    """Why `membership_matrix` draws independent coins rather than balancing each example.

    Pure noise, no membership effect at all: an honest evaluation must find AUC 0.5. With
    each example in exactly half of the models, a target's members have one "in" shadow
    fewer and one "out" shadow more than its non-members, which lowers their likelihood
    ratio. Over 150 draws of this setting: AUC 0.460 +- 0.010 balanced, 0.500 +- 0.009
    independent. (An even number of models is the worst case: with 9 models, half of the
    examples are in 5 and half in 4, and the bias is about half as large, 0.480; with 17
    models 0.492. One target on many examples is the cheapest way to a precise AUC.)
    """
    num_models, num_examples = 8, 4000
    rng = np.random.default_rng(0)
    stats = rng.normal(size=(num_models, num_examples)) + rng.normal(0.0, 2.0, num_examples)
    independent = lira_from_statistics(
        stats, membership_matrix(num_models, num_examples, rng), num_targets=1
    )
    balanced = lira_from_statistics(
        stats, _balanced_keep(num_models, num_examples, rng), num_targets=1
    )
    # Measured: independent 0.4995, balanced 0.453.
    assert independent.mode == balanced.mode == ONLINE
    assert abs(independent.auc - 0.5) < 0.02
    assert balanced.auc < 0.48


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
    # Every example in 2 to 4 of the 6 models: for every target it has an in and an out shadow.
    keep = _keep_with_counts(num_models, num_examples, [2, 3, 4], rng)
    stats = rng.normal(size=keep.shape) + 1.5 * keep
    report = lira_from_statistics(stats, keep, fix_variance=True)
    assert report.mode == ONLINE and report.num_fallback_pairs == 0
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
    np.testing.assert_allclose(
        report.scores, _lira_by_hand(stats, keep, online=True, fix_variance=True), rtol=1e-9
    )
    np.testing.assert_array_equal(report.is_member, keep.reshape(-1))
    np.testing.assert_array_equal(report.target_index, np.repeat(np.arange(num_models), num_examples))


@pytest.mark.parametrize("fix_variance", [True, False])
def test_examples_without_in_or_out_shadows_get_the_average_fit(fix_variance):
    rng = np.random.default_rng(3)
    num_models, num_examples = 7, 60
    # 3 or 4 of 7 models: every nonempty group has >= 2 shadows (a per-example std of one
    # shadow would be 0). Then example 0 is in every model (no target has an out shadow for
    # it) and example 1 in none (no in shadow): 2 * 7 = 14 of 420 pairs, 3.3%, so online.
    keep = _keep_with_counts(num_models, num_examples, [3, 4], rng)
    keep[:, 0], keep[:, 1] = True, False
    stats = rng.normal(size=keep.shape) + 1.0 * keep
    report = lira_from_statistics(stats, keep, fix_variance=fix_variance)
    assert report.mode == ONLINE
    assert report.num_fallback_pairs == 14 and report.to_dict()["fallback_pairs"] == 14
    expected = _lira_by_hand(stats, keep, online=True, fix_variance=fix_variance)
    np.testing.assert_allclose(report.scores, expected, rtol=1e-9, atol=1e-9)


def test_offline_scores_match_the_out_fit_computed_by_hand():
    rng = np.random.default_rng(4)
    keep = _draw_keep(3, 50, seed=4)  # 2 shadows: a quarter of the pairs lack a group
    stats = rng.normal(size=keep.shape) + 1.0 * keep
    report = lira_from_statistics(stats, keep)
    assert report.mode == OFFLINE
    # Offline only the out fit is used: the fallback pairs are those without out shadows.
    shadows_in = keep.sum(axis=0)[np.newaxis, :] - keep
    assert report.num_fallback_pairs == int(np.sum(shadows_in == 2)) > 0
    expected = _lira_by_hand(stats, keep, online=False, fix_variance=True)
    np.testing.assert_allclose(report.scores, expected, rtol=1e-9, atol=1e-9)


def test_online_unless_more_than_5_percent_of_pairs_lack_a_group():
    rng = np.random.default_rng(5)
    num_models, num_examples = 9, 100
    keep = _keep_with_counts(num_models, num_examples, range(2, 8), rng)  # no pair lacks a group
    stats = rng.normal(size=keep.shape)
    report = lira_from_statistics(stats, keep)
    assert report.mode == ONLINE and report.num_fallback_pairs == 0
    # An example in all 9 models lacks out shadows for all 9 targets, one in none in shadows.
    keep[:, :3] = True
    keep[:, 3:5] = False  # 5 * 9 = 45 of 900 pairs: exactly 5%, still online
    report = lira_from_statistics(stats, keep)
    assert report.mode == ONLINE and report.num_fallback_pairs == 45
    # An example only model j trains on lacks in shadows for target j alone: 8 more pairs.
    keep[:, 5:13] = False
    keep[np.arange(1, 9), np.arange(5, 13)] = True
    report = lira_from_statistics(stats, keep)  # 53 of 900, 5.9%
    assert report.mode == OFFLINE
    assert report.num_fallback_pairs == 27  # offline, only the pairs without out shadows count
    # The rule counts the pairs of the targets used: target 0 alone has 5 of 100.
    report = lira_from_statistics(stats, keep, num_targets=1)
    assert report.mode == ONLINE and report.num_fallback_pairs == 5


def test_a_target_whose_shadows_train_on_everything_is_refused():
    keep = np.ones((3, 6), dtype=bool)
    keep[2, :3] = False
    with pytest.raises(ValueError, match="target model 2 has, for every example"):
        lira_from_statistics(np.zeros((3, 6)), keep)


# ----- plumbing -----


def test_membership_matrix_is_independent_fair_coins_and_reproducible():
    num_models, num_examples = 9, 4000
    keep = membership_matrix(num_models, num_examples, np.random.default_rng(0))
    assert keep.shape == (num_models, num_examples) and keep.dtype == bool
    # About half True: the count is Binomial(36000, 1/2), sd 95; allow 5 sd.
    assert abs(int(keep.sum()) - keep.size / 2) < 5 * np.sqrt(keep.size / 4)
    # Per example the number of models is Binomial(9, 1/2), variance 9/4 (balanced: 1/4).
    assert abs(keep.sum(axis=0).var() - num_models / 4) < 0.25
    # What LiRA needs: a target's own membership says nothing about its shadows'. Balanced
    # per example, a member would have about one "in" shadow fewer than a non-member.
    shadows_in = keep.sum(axis=0)[np.newaxis, :] - keep
    assert abs(shadows_in[keep].mean() - shadows_in[~keep].mean()) < 0.1  # sd about 0.02

    a = membership_matrix(7, 51, np.random.default_rng(1))
    assert np.array_equal(a, membership_matrix(7, 51, np.random.default_rng(1)))
    assert not np.array_equal(a, membership_matrix(7, 51, np.random.default_rng(2)))


def test_every_model_trains_on_something_even_in_tiny_pools():
    # With 2 or 3 examples, a fair-coin row is empty (or full) often; the draw is redone.
    redrawn = 0
    for seed in range(30):
        for num_models, num_examples in ((5, 2), (2, 2), (9, 3)):
            keep = _draw_keep(num_models, num_examples, seed)
            assert keep.any(axis=1).all()
            # Never M - 1 models on everything: the last one would have no out shadow at all.
            assert keep.all(axis=1).sum() <= num_models - 2
            first = membership_matrix(num_models, num_examples, np.random.default_rng(seed))
            redrawn += not np.array_equal(keep, first)
    assert redrawn > 10
    with pytest.raises(ValueError, match="Could not split 2 examples among 40 models"):
        _draw_keep(40, 2, seed=0)


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
    # The first draw of the membership matrix (every model has examples, none has all).
    np.testing.assert_array_equal(report.keep, membership_matrix(7, 51, np.random.default_rng(11)))
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


@pytest.mark.parametrize("num_shadow", [1, 2, 3])
def test_few_shadows_fall_back_to_the_offline_attack(num_shadow):
    # A pair lacks in or out shadows with probability 2 * 2**-num_shadow: 100%, 50%, 25%.
    x, y, _ = _pool(80)
    lines = []
    report = lira(_memorizer_fn(y), (x, y), num_shadow=num_shadow, log=lines.append)
    assert report.mode == OFFLINE
    assert "offline" in lines[-1] and "5%" in lines[-1]
    assert np.all(np.isfinite(report.scores))
    assert report.scores.shape == ((num_shadow + 1) * 80,)
    assert report.auc > 0.9  # the out fit alone finds a memorizer
    assert report.to_dict()["mode"] == OFFLINE
    shadows_in = report.keep.sum(axis=0)[np.newaxis, :] - report.keep
    assert report.num_fallback_pairs == int(np.sum(shadows_in == num_shadow)) > 0


def test_eight_shadows_run_the_online_attack():
    x, y, _ = _pool(80)
    lines = []
    report = lira(_memorizer_fn(y), (x, y), num_shadow=8, log=lines.append)
    assert report.mode == ONLINE
    assert "offline" not in lines[-1]
    # About 2 * 2**-8 of the 720 pairs lack a group (expected 5.6).
    assert report.num_fallback_pairs < 36


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
        "fallback_pairs", "assumptions",
    }
    assert summary["fallback_pairs"] == 0
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
    assert report.mode == OFFLINE  # with 4 shadows, 1 pair in 8 lacks an in or out shadow
    assert report.auc > 0.6  # measured 0.88 (offline; 0.98 online with the old balanced draw)
