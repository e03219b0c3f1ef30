"""tfdp.attacks.one_run_audit: Steinke-Nasr-Jagielski statistics, simulations, the driver."""

import dataclasses
import json
import math
import types

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution
from scipy import stats

from tfdp.attacks.one_run_audit import (
    OneRunAudit,
    audit_from_scores,
    audit_p_value,
    default_guess_counts,
    epsilon_lower_bound,
    one_run_audit,
)
from tfdp.data import Dataset

DELTA = 1e-5


def _theorem_p_value(m, r, v, eps, delta):
    """Theorem 5.2 written out term by term (independent of the module's vectorized form)."""
    q = math.exp(eps) / (1.0 + math.exp(eps))

    def tail(k):  # P[Binomial(r, q) >= k]
        return 1.0 if k <= 0 else float(stats.binom.sf(k - 1, r, q))

    extra = max((tail(v - i) - tail(v)) / i for i in range(1, v + 1)) if v else 0.0
    return min(1.0, tail(v) + 2 * m * delta * extra)


def _gaussian_epsilon(sigma, delta=DELTA, compositions=1):
    """Exact-ish (pessimistic PLD) epsilon of a sensitivity-1 Gaussian mechanism."""
    pld = privacy_loss_distribution.from_gaussian_mechanism(
        sigma, value_discretization_interval=1e-3
    )
    if compositions > 1:
        pld = pld.self_compose(compositions)
    return pld.get_epsilon_for_delta(delta)


def _included(m, seed):
    """The inclusion bits the driver draws for this seed."""
    return np.random.default_rng(seed).random(m) < 0.5


def _randomized_response(eps, m, seed):
    """Each canary's score is its inclusion bit, flipped w.p. 1/(1+e^eps): exactly eps-DP."""
    included = _included(m, seed)
    rng = np.random.default_rng([seed, 99])
    flipped = rng.random(m) < 1.0 / (1.0 + math.exp(eps))
    scores = (included ^ flipped).astype(float) + 1e-6 * rng.standard_normal(m)
    return audit_from_scores(scores, included, delta=0.0, confidence=0.95, seed=seed)


def _gaussian_scores(sigma, m, seed):
    included = _included(m, seed)
    rng = np.random.default_rng([seed, 7])
    return included + sigma * rng.standard_normal(m), included


# ----------------------------------------------------------------------------- statistics


# (Few test functions, many cases each: the shared conftest costs ~0.5 s per test.)


def test_p_value_without_delta_is_the_binomial_tail():
    for m, r, v in [(1000, 200, 180), (100, 10, 7), (50, 50, 50), (20, 4, 0)]:
        for eps in (0.0, 0.5, 2.0, 5.0):
            q = math.exp(eps) / (1 + math.exp(eps))
            expected = 1.0 if v == 0 else stats.binom.sf(v - 1, r, q)
            assert audit_p_value(m, r, v, eps, 0.0) == pytest.approx(expected, rel=1e-12, abs=0)


def test_p_value_with_delta_matches_the_theorem():
    for m, r, v in [(1000, 200, 180), (1000, 1000, 700), (200, 200, 200), (30, 10, 9)]:
        for delta in (1e-5, 1e-3):
            for eps in (0.0, 1.0, 2.5):
                assert audit_p_value(m, r, v, eps, delta) == pytest.approx(
                    _theorem_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15
                ), (m, r, v, delta, eps)


def test_p_value_increases_with_epsilon_and_with_delta():
    epsilons = np.linspace(0.0, 6.0, 61)
    for m, r, v in [(1000, 200, 180), (1000, 1000, 620), (200, 200, 200)]:
        for delta in (0.0, 1e-5, 4e-4):  # 2 m delta <= 1: the theorem's bound is monotone
            p = np.array([audit_p_value(m, r, v, e, delta) for e in epsilons])
            assert np.all(np.diff(p) >= -1e-12), (m, r, v, delta)
            assert p[-1] > p[0]
        p0 = np.array([audit_p_value(m, r, v, e, 0.0) for e in epsilons])
        p1 = np.array([audit_p_value(m, r, v, e, 1e-4) for e in epsilons])
        assert np.all(p1 >= p0)
        assert np.any(p1 > p0)  # the delta term adds something


def test_bound_is_the_crossing_of_the_p_value():
    for m, r, v, delta in [(1000, 200, 180, 0.0), (1000, 200, 180, 1e-5), (500, 500, 400, 1e-4)]:
        alpha = 0.05
        bound = epsilon_lower_bound(m, r, v, delta=delta, confidence=1 - alpha)
        assert bound > 0
        assert audit_p_value(m, r, v, bound, delta) < alpha
        assert audit_p_value(m, r, v, bound + 1e-5, delta) >= alpha


def test_bound_with_delta_is_at_most_the_bound_without():
    for m, r, v in [(1000, 200, 180), (1000, 1000, 700), (200, 200, 200), (10_000, 10_000, 8000)]:
        previous = epsilon_lower_bound(m, r, v, delta=0.0, confidence=0.95)
        assert previous > 0
        # 2 m delta > 1 for the largest deltas: the search must still stay below.
        for delta in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
            bound = epsilon_lower_bound(m, r, v, delta=delta, confidence=0.95)
            assert 0.0 <= bound <= previous + 1e-9, (m, r, v, delta)
            previous = bound


def test_bound_known_values_and_zero_without_evidence():
    # All r guesses right, delta = 0: the bound solves q^r = alpha.
    for r in (10, 100):
        q = 0.05 ** (1.0 / r)
        assert epsilon_lower_bound(r, r, r, delta=0.0, confidence=0.95) == pytest.approx(
            math.log(q / (1 - q)), abs=2e-6
        )
    assert epsilon_lower_bound(1000, 1000, 500, delta=0.0, confidence=0.95) == 0.0
    assert epsilon_lower_bound(1000, 100, 10, delta=0.0, confidence=0.95) == 0.0
    assert epsilon_lower_bound(1000, 0, 0, delta=0.0, confidence=0.95) == 0.0
    # Higher confidence, or fewer canaries for the same fraction correct: a smaller bound.
    assert epsilon_lower_bound(1000, 1000, 800, delta=0.0, confidence=0.99) < epsilon_lower_bound(
        1000, 1000, 800, delta=0.0, confidence=0.9
    )
    assert epsilon_lower_bound(100, 100, 80, delta=0.0, confidence=0.95) < epsilon_lower_bound(
        1000, 1000, 800, delta=0.0, confidence=0.95
    )


def test_default_guess_counts():
    assert default_guess_counts(1000) == (100, 200, 500, 1000)
    assert default_guess_counts(2) == (2,)
    assert default_guess_counts(3) == (2,)
    counts = default_guess_counts(101)
    assert all(r % 2 == 0 and 2 <= r <= 101 for r in counts) and len(set(counts)) == len(counts)


def test_guesses_and_union_bound_from_scores():
    # Scores 0..9: with r = 4, canaries 8, 9 are guessed in and 0, 1 out.
    included = np.array([0, 1, 0, 0, 1, 1, 0, 1, 1, 0], dtype=bool)
    result = audit_from_scores(np.arange(10.0), included, delta=0.0, guess_counts=[4, 10])
    (r4, v4, _), (r10, v10, _) = result.results_per_guess_count
    assert (r4, v4) == (4, 2)  # 9 out (wrong), 8 in (right), 0 out (right), 1 in (wrong)
    assert (r10, v10) == (10, 6)  # top 5 = 5..9 has 3 in; bottom 5 has 3 out
    # Separable scores: every guess right, each count tested at 1 - 0.05 / len(counts).
    m = 400
    included = _included(m, 3)
    n_in = int(included.sum())
    assert n_in != m // 2
    result = audit_from_scores(included + 0.01 * np.arange(m) / m, included, delta=0.0)
    assert result.guess_counts_tried == (40, 80, 200, 400)
    for r, v, bound in result.results_per_guess_count:
        # r/2 "in" guesses are right up to the number included, r/2 "out" up to the rest.
        assert v == min(r // 2, n_in) + min(r // 2, m - n_in)
        assert bound == pytest.approx(
            epsilon_lower_bound(m, r, v, delta=0.0, confidence=1 - 0.05 / 4), abs=1e-12
        )
    assert result.num_guesses == 200 and result.num_correct == 200  # r = m has mistakes
    assert result.epsilon_lower_bound == max(b for _, _, b in result.results_per_guess_count)
    assert result.epsilon_lower_bound < epsilon_lower_bound(m, m, m, delta=0.0, confidence=0.95)


# ----------------------------------------------------------------------------- simulations


def test_randomized_response_bound_is_below_epsilon():
    for eps in (1.0, 2.0, 4.0):
        bounds = np.array(
            [_randomized_response(eps, 1000, seed).epsilon_lower_bound for seed in range(20)]
        )
        assert np.mean(bounds >= eps) <= 0.15, (eps, bounds)  # each seed: w.p. <= 5%
        assert np.median(bounds) > 0.5 * eps, (eps, bounds)  # and it does find the leakage


def test_randomized_response_bound_is_close_with_many_canaries():
    for eps in (1.0, 2.0, 4.0):
        bounds = np.array(
            [_randomized_response(eps, 10_000, seed).epsilon_lower_bound for seed in range(5)]
        )
        assert np.all(bounds >= 0.75 * eps), (eps, bounds)
        assert np.all(bounds <= 1.05 * eps), (eps, bounds)


def test_randomized_response_bound_grows_with_canaries():
    medians = [
        np.median([_randomized_response(2.0, m, seed).epsilon_lower_bound for seed in range(5)])
        for m in (100, 1000, 10_000)
    ]
    assert medians[0] < medians[1] < medians[2] < 2.0


def test_gaussian_mechanism_bound_is_below_its_epsilon():
    for sigma, expected in ((0.5, 9.997), (1.0, 4.377)):
        eps_true = _gaussian_epsilon(sigma)
        assert eps_true == pytest.approx(expected, abs=2e-3)
        bounds = []
        for seed in range(10):
            scores, included = _gaussian_scores(sigma, 1000, seed)
            audit = audit_from_scores(scores, included, delta=DELTA, seed=seed)
            bounds.append(audit.epsilon_lower_bound)
        bounds = np.array(bounds)
        assert np.all(bounds <= eps_true), (sigma, bounds)
        assert np.all(bounds > 0.5), (sigma, bounds)


def _assert_chance_level(result):
    """Guesses independent of inclusion: about half right at every guess count (5 sd)."""
    for r, v, _ in result.results_per_guess_count:
        assert abs(v - r / 2) <= 5 * math.sqrt(r) / 2, (r, v)


def test_no_signal_gives_zero():
    m = 1000
    random_zero, tied_zero = 0, 0
    for seed in range(20):
        included = _included(m, seed)
        noise = np.random.default_rng([seed, 5]).standard_normal(m)
        random_zero += audit_from_scores(noise, included, seed=seed).epsilon_lower_bound == 0.0
        # All scores tied: the tie-break must not reuse the inclusion draw of the same seed.
        tied = audit_from_scores(np.zeros(m), included, seed=seed)
        tied_zero += tied.epsilon_lower_bound == 0.0
        _assert_chance_level(tied)
    assert random_zero >= 17
    assert tied_zero >= 17


# ----------------------------------------------------------------------------- driver, blackbox

NUM_CLASSES = 5
POOL_SIZE = 300


def _pool(one_hot=False, seed=11):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((POOL_SIZE, 4)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, POOL_SIZE)
    if one_hot:
        y = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    return x, y


def _indices(y):
    y = np.asarray(y)
    return np.argmax(y, axis=1) if y.ndim == 2 else y.astype(int)


class _Memorizer:
    """p = 0.99 for the training label of inputs it was trained on, uniform otherwise."""

    def __init__(self, x, y, memorize=True):
        pairs = zip(x, _indices(y)) if memorize else ()
        self.table = {row.tobytes(): label for row, label in pairs}

    def __call__(self, x, training=False):
        x = np.asarray(x)
        out = np.full((len(x), NUM_CLASSES), 1.0 / NUM_CLASSES)
        for row, example in enumerate(x):
            label = self.table.get(example.tobytes())
            if label is not None:
                out[row] = 0.01 / (NUM_CLASSES - 1)
                out[row, label] = 0.99
        return out


class _Trainer:
    """A fake train_fn recording what it was given."""

    def __init__(self, memorize=True):
        self.memorize = memorize
        self.calls = []

    def __call__(self, data, seed):
        x, y = data
        self.calls.append((np.array(x), np.array(y), seed))
        return _Memorizer(x, y, memorize=self.memorize)


def _assert_separated(result):
    n_in, m = result.num_included, result.num_canaries
    for r, v, _ in result.results_per_guess_count:
        assert v == min(r // 2, n_in) + min(r // 2, m - n_in)


def _rows(x):
    return [row.tobytes() for row in x]


@pytest.mark.parametrize("one_hot", [False, True])
def test_blackbox_noise_canaries_memorized(one_hot):
    x, y = _pool(one_hot)
    trainer = _Trainer()
    messages = []
    result = one_run_audit(trainer, (x, y), num_canaries=200, delta=DELTA, seed=3,
                           log=messages.append)
    assert isinstance(result, OneRunAudit)
    assert len(trainer.calls) == 1
    train_x, train_y, seed = trainer.calls[0]
    assert seed == 3
    assert result.num_included == int(_included(200, 3).sum())
    assert len(train_x) == POOL_SIZE + result.num_included
    assert train_y.shape[1:] == y.shape[1:] and train_y.dtype == y.dtype
    assert train_x.dtype == x.dtype and train_x.shape[1:] == x.shape[1:]
    pool_rows = set(_rows(x))
    assert pool_rows <= set(_rows(train_x))  # the whole pool
    is_canary = np.array([row not in pool_rows for row in _rows(train_x)])
    assert is_canary.sum() == result.num_included
    assert not np.all(is_canary[-result.num_included:])  # shuffled in, not appended
    assert train_x[is_canary].min() >= x.min() and train_x[is_canary].max() <= x.max()
    if one_hot:
        assert np.all(train_y.sum(axis=1) == 1)
    assert set(np.unique(_indices(train_y[is_canary]))) <= set(range(NUM_CLASSES))
    # Every included canary is memorized, every other one is not: the guesses are right
    # up to the imbalance between included and excluded canaries.
    _assert_separated(result)
    assert result.epsilon_lower_bound > 1.0
    assert result.threat_model == "blackbox" and result.canary_kind == "noise"
    assert messages and messages[-1] == result.description


def test_blackbox_mislabeled_canaries():
    x, y = _pool()
    trainer = _Trainer()
    result = one_run_audit(trainer, (x, y), num_canaries=200, canary_kind="mislabeled", seed=1,
                           log=None)
    train_x, train_y, _ = trainer.calls[0]
    assert len(train_x) == POOL_SIZE - 200 + result.num_included
    original = {row: label for row, label in zip(_rows(x), y)}
    rows = _rows(train_x)
    assert len(set(rows)) == len(rows)  # each pool input at most once
    assert all(row in original for row in rows)  # canaries are pool inputs...
    relabeled = np.array([original[row] != label for row, label in zip(rows, train_y)])
    assert relabeled.sum() == result.num_included  # ...with a different label
    # The 200 chosen examples are never trained on with their own label: exactly
    # POOL_SIZE - 200 rows keep theirs, and the excluded canaries are absent.
    assert (~relabeled).sum() == POOL_SIZE - 200
    _assert_separated(result)
    assert result.epsilon_lower_bound > 1.0 and result.canary_kind == "mislabeled"


def test_blackbox_model_ignoring_training_gives_zero():
    x, y = _pool()
    for seed in range(3):
        result = one_run_audit(_Trainer(memorize=False), (x, y), num_canaries=200, seed=seed,
                               log=None)
        assert result.epsilon_lower_bound == 0.0
        _assert_chance_level(result)


def test_blackbox_accepts_a_tfdp_dataset_and_is_reproducible():
    x, y = _pool()
    dataset = Dataset(name="toy", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10],
                      class_names=[str(c) for c in range(NUM_CLASSES)])
    first, second = _Trainer(), _Trainer()
    a = one_run_audit(first, dataset, num_canaries=50, seed=4, log=None)
    b = one_run_audit(second, (x, y), num_canaries=50, seed=4, log=None)
    assert a == b
    np.testing.assert_array_equal(first.calls[0][0], second.calls[0][0])
    record = a.to_dict()
    json.dumps(record)
    assert record["epsilon_lower_bound"] == a.epsilon_lower_bound
    assert record["guess_counts_tried"] == list(default_guess_counts(50))
    assert "not (eps, 1e-05)-DP" in record["description"] and "lower bound" in record["description"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.epsilon_lower_bound = 9.0


# ----------------------------------------------------------------------------- driver, whitebox

WHITEBOX_SIGMA, WHITEBOX_STEPS = 1.0, 4


class _CanaryOptimizer:
    def __init__(self, scores):
        self._scores = scores

    def gradient_canary_scores(self):
        return self._scores


def _whitebox_train_fn(record):
    """Every step adds each included canary's unit gradient plus N(0, sigma^2) noise."""

    def train_fn(data, seed, gradient_canaries=None):
        record.append((data, seed, gradient_canaries))
        rng = np.random.default_rng([seed, 123])
        included = np.asarray(gradient_canaries, dtype=float)
        noise = WHITEBOX_SIGMA * rng.standard_normal((WHITEBOX_STEPS, len(included)))
        scores = (included[None, :] + noise).sum(axis=0)
        return types.SimpleNamespace(optimizer=_CanaryOptimizer(scores))

    return train_fn


def test_whitebox_bound_is_positive_and_below_the_mechanism_epsilon():
    x, y = _pool()
    eps_true = _gaussian_epsilon(WHITEBOX_SIGMA, compositions=WHITEBOX_STEPS)
    record = []
    bounds = []
    for seed in range(3):
        result = one_run_audit(_whitebox_train_fn(record), (x, y), num_canaries=1000,
                               threat_model="whitebox", seed=seed, log=None)
        data, seed_given, canaries = record[-1]
        assert seed_given == seed
        assert data[0] is x or np.array_equal(data[0], x)
        np.testing.assert_array_equal(data[1], y)
        assert canaries.dtype == bool and canaries.shape == (1000,)
        np.testing.assert_array_equal(canaries, _included(1000, seed))
        assert result.num_included == canaries.sum()
        assert result.threat_model == "whitebox" and result.canary_kind is None
        bounds.append(result.epsilon_lower_bound)
    assert all(0.5 < b <= eps_true for b in bounds), (bounds, eps_true)


def test_whitebox_needs_the_gradient_canary_hooks():
    x, y = _pool()
    with pytest.raises(ValueError, match="does not accept `gradient_canaries`"):
        one_run_audit(lambda data, seed: None, (x, y), num_canaries=10, threat_model="whitebox",
                      log=None)
    with pytest.raises(ValueError, match="gradient_canary_scores"):
        one_run_audit(lambda data, seed, gradient_canaries=None: object(), (x, y), num_canaries=10,
                      threat_model="whitebox", log=None)
    # **kwargs is accepted as taking the argument.
    result = one_run_audit(
        lambda data, seed, **kw: types.SimpleNamespace(
            optimizer=_CanaryOptimizer(kw["gradient_canaries"].astype(float))),
        (x, y), num_canaries=10, threat_model="whitebox", log=None)
    assert result.num_correct == result.num_guesses


# ----------------------------------------------------------------------------- bad input


def test_bad_arguments():
    cases = [
        (dict(num_canaries=1), "num_canaries"),
        (dict(num_canaries=0), "num_canaries"),
        (dict(num_canaries=2.5), "num_canaries"),
        (dict(num_canaries=10, threat_model="greybox"), "threat_model"),
        (dict(num_canaries=10, canary_kind="adversarial"), "canary_kind"),
        (dict(num_canaries=10, confidence=1.0), "confidence"),
        (dict(num_canaries=10, confidence=0.0), "confidence"),
        (dict(num_canaries=10, delta=1.0), "delta"),
        (dict(num_canaries=10, delta=-1e-5), "delta"),
        (dict(num_canaries=10, guess_counts=[3]), "even"),
        (dict(num_canaries=POOL_SIZE, canary_kind="mislabeled"), "below the pool size"),
    ]
    for kwargs, match in cases:
        trainer = _Trainer()
        with pytest.raises(ValueError, match=match):
            one_run_audit(trainer, _pool(), log=None, **kwargs)
        assert not trainer.calls, kwargs  # rejected before training


def test_bad_statistics_arguments():
    with pytest.raises(ValueError, match="num_correct"):
        audit_p_value(10, 4, 5, 1.0, 0.0)
    with pytest.raises(ValueError, match="num_guesses"):
        epsilon_lower_bound(10, 12, 5, delta=0.0, confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        epsilon_lower_bound(10, 4, 4, delta=0.0, confidence=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        audit_p_value(10, 4, 4, -1.0, 0.0)
    with pytest.raises(ValueError, match="one score per canary"):
        audit_from_scores(np.zeros(5), np.zeros(6, dtype=bool))
