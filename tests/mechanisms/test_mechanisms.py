"""tfdp.mechanisms: the registry, each mechanism's events and queries, and a third mechanism
added with nothing but its own class and a registration line."""

import math
import os
import re

import dp_accounting
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp import mechanisms
from tfdp._tf_privacy import gaussian_query
from tfdp.mechanisms import get_mechanism

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_registry_holds_gaussian_and_laplace_with_their_clip_and_accountant():
    assert mechanisms.mechanism_names()[:2] == ("gaussian", "laplace")
    gaussian, laplace = get_mechanism("gaussian"), get_mechanism("laplace")
    assert (gaussian.clip_kind, gaussian.clip_argument, gaussian.default_accountant) == (
        "l2", "l2_norm_clip", "rdp")
    assert (laplace.clip_kind, laplace.clip_argument, laplace.default_accountant) == (
        "l1", "l1_norm_clip", "pld")
    with pytest.raises(ValueError, match="RDP accountant refuses"):
        laplace.check_accountant("rdp")
    with pytest.raises(ValueError, match="must be one of"):
        get_mechanism("uniform")


@pytest.mark.parametrize("name, single", [
    ("gaussian", dp_accounting.GaussianDpEvent(1.3)),
    ("laplace", dp_accounting.LaplaceDpEvent(1.3)),
])
def test_dp_event_is_the_sampled_self_composed_step(name, single):
    mechanism = get_mechanism(name)
    assert mechanism.step_event(1.3) == single
    assert mechanism.dp_event(1.3, 0.01, 50) == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, single), 50)
    assert mechanism.dp_event(1.3, None, 1) == single
    assert isinstance(mechanism.dp_event(1.3, 0.01, 0), dp_accounting.NoOpDpEvent)


def test_queries_round_trip_through_their_mechanism():
    for name, clip in (("gaussian", "l2_norm_clip"), ("laplace", "l1_norm_clip")):
        query = mechanisms.make_dp_sum_query(name, "random", noise_multiplier=0.7,
                                             noise_probability=0.25, on_skip="drop",
                                             **{clip: 2.0})
        settings = mechanisms.describe_query(query)
        assert settings["mechanism"] == name and settings[clip] == 2.0
        assert settings["noise_multiplier"] == 0.7 and settings["noise_probability"] == 0.25
        rebuilt = mechanisms.query_from_config(mechanisms.query_to_config(query))
        assert mechanisms.describe_query(rebuilt) == settings
        assert mechanisms.clip_norm_kind(query) == get_mechanism(name).clip_kind


def test_a_query_built_by_tf_privacy_is_read_through_its_public_state():
    query = gaussian_query.GaussianSumQuery(l2_norm_clip=2.0, stddev=3.0)
    settings = mechanisms.describe_query(query)
    assert settings["mechanism"] == "gaussian" and settings["l2_norm_clip"] == 2.0
    assert settings["noise_multiplier"] == pytest.approx(1.5, rel=1e-7)


# ----- a third mechanism: its own class plus one registration line -----

class _TwinQuery(tfdp.queries.GaussianSumQuery):
    """A query class of its own (here the Gaussian sum query under another name)."""


class TwinGaussian(mechanisms.GaussianMechanism):
    """A hypothetical third mechanism: a Gaussian twin with its own name and query class."""

    name = "twin"
    title = "Twin-Gaussian"
    query_class = _TwinQuery

    def make_query(self, clip, noise_multiplier):
        return _TwinQuery(clip, noise_multiplier * clip, noise_multiplier=noise_multiplier)

    def query_from_config(self, config):
        return _TwinQuery(**config)


@pytest.fixture
def twin():
    # The whole integration: one registration line (and its removal after the test).
    mechanisms.register_mechanism(TwinGaussian)
    # Gaussian's owns_query is an isinstance test, so the twin (a subclass) must be asked first.
    yield get_mechanism("twin")
    mechanisms.unregister_mechanism("twin")


def test_a_registered_third_mechanism_works_everywhere_without_other_edits(twin):
    assert "twin" in mechanisms.mechanism_names()
    # Factory, description, serialization, the fast path's clip kind.
    query = mechanisms.make_dp_sum_query("twin", noise_multiplier=1.1, l2_norm_clip=1.0)
    assert isinstance(query, _TwinQuery)
    assert mechanisms.describe_query(query)["mechanism"] == "twin"
    assert isinstance(mechanisms.query_from_config(mechanisms.query_to_config(query)), _TwinQuery)
    assert mechanisms.clip_norm_kind(query) == "l2"
    # Accounting: its events through the accountant, its words in the statement.
    result = tfdp.compute_epsilon(1000, 10, 1.1, steps=200, mechanism="twin")
    reference = tfdp.compute_epsilon(1000, 10, 1.1, steps=200, mechanism="gaussian")
    assert result.epsilon == pytest.approx(reference.epsilon, rel=1e-12)
    assert "Twin-Gaussian noise" in result.statement
    assert tfdp.calibrate_noise_multiplier(2.0, 1e-5, 1000, 10, steps=200, mechanism="twin") == (
        pytest.approx(tfdp.calibrate_noise_multiplier(2.0, 1e-5, 1000, 10, steps=200), rel=1e-9))
    # The optimizer, make_private's fast path, the ledger and the callback.
    optimizer = tfdp.DPKerasSGDOptimizer(mechanism="twin", l2_norm_clip=1.0, noise_multiplier=1.1,
                                         learning_rate=0.1, expected_batch_size=8)
    assert optimizer.dp_settings["mechanism"] == "twin"
    model = tfdp.make_private(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    callback = tfdp.PrivacyCallback(32, 1e-5)
    model.fit(tfdp.data.poisson_batches(x, y, 8), epochs=1, verbose=0, callbacks=[callback])
    expected = tfdp.compute_epsilon(32, 8, 1.1, steps=4, mechanism="gaussian", noisy_steps=4)
    assert callback.result.epsilon == pytest.approx(expected.epsilon, rel=1e-12)


# ----- names are defined once -----

_NAME_GROUPS = {
    "mechanisms": ("gaussian", "laplace"),
    "noise schedules": ("regular", "random"),
    "on_skip actions": ("release", "drop"),
    "samplings": ("poisson", "shuffle"),
    "accountants": ("rdp", "pld"),
}


def _sources():
    for top in ("tfdp", "scripts", "models"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, ROOT), open(path, encoding="utf-8").read()


@pytest.mark.parametrize("group", sorted(_NAME_GROUPS))
def test_each_group_of_names_is_spelled_out_as_a_set_only_in_tfdp_names(group):
    first, second = _NAME_GROUPS[group]
    # A tuple, list or set literal holding both names: the way the old code retyped them.
    pattern = re.compile(rf"[(\[{{]\s*['\"]{first}['\"]\s*,\s*['\"]{second}['\"]")
    offenders = [path for path, text in _sources() if pattern.search(text)]
    assert offenders == [], f"{group} retyped in {offenders}; use tfdp.mechanisms / tfdp.names"
