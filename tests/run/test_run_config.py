"""tfdp.run.config: the frozen RunConfig, its validation and the method names."""

import dataclasses
import math

import pytest

from tfdp import mechanisms, run
from tfdp.run import config as run_config


def test_names_come_from_the_mechanisms():
    assert run_config.DP_SGD_MECHANISMS == mechanisms.mechanism_names()
    assert run_config.METHODS == (mechanisms.NO_NOISE,) + mechanisms.mechanism_names() + (
        "residual_perturbation", "neuraldp")
    assert run_config.SCHEDULES == mechanisms.values(mechanisms.NoiseSchedule)
    assert run_config.SAMPLINGS == mechanisms.values(mechanisms.Sampling)
    assert run_config.ON_SKIP == mechanisms.values(mechanisms.OnSkip)
    assert run.TrainConfig is run.RunConfig


def test_frozen_and_validated_returns_a_new_checked_copy():
    config = run.RunConfig(mechanism="laplace", noise_multiplier=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    checked = config.validated()
    assert checked is not config and config.l1_norm_clip is None
    assert checked.l1_norm_clip == 1.0 and checked.l2_norm_clip is None
    assert checked == config.resolved()
    assert run.RunConfig(noise_multiplier=1.0).validated().l2_norm_clip == 1.0
    listed = run.RunConfig(noise_multiplier=1.0, attack_types=["threshold"]).validated()
    assert listed.attack_types == ("threshold",)


@pytest.mark.parametrize("kwargs,message", [
    (dict(mechanism="gaussian", noise_multiplier=1.0, l1_norm_clip=1.0), "needs --l2_norm_clip"),
    (dict(mechanism="laplace", noise_multiplier=1.0, l2_norm_clip=1.0), "only DP with L1"),
    (dict(noise_multiplier=1.0, delta=1.0), r"`delta` must be in \(0, 1\)"),
    (dict(noise_multiplier=1.0, noise_schedule="random", noise_probability=0.0),
     "never adds noise"),
    (dict(mechanism="none", noise_schedule="random"), "need a noise mechanism"),
    (dict(noise_multiplier=1.0, on_skip="keep"), "on_skip"),
    (dict(mechanism="residual_perturbation", gamma=0.5, on_skip="drop"), "DP-SGD settings"),
])
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run.RunConfig(**kwargs).validated()


def test_method_names_and_guarantees():
    names = {
        run.RunConfig(mechanism="none"): ("No-DP", False),
        run.RunConfig(noise_multiplier=1.0): ("Gaussian RegN-DP-SGD", True),
        run.RunConfig(mechanism="laplace", noise_schedule="random", noise_probability=0.5,
                      on_skip="drop", noise_multiplier=1.0): ("Laplace RanN-DP-SGD (drop)", True),
        run.RunConfig(noise_schedule="random", noise_probability=0.5,
                      noise_multiplier=1.0): ("Gaussian RanN-DP-SGD", False),
        run.RunConfig(mechanism="residual_perturbation", gamma=0.5,
                      residual_noise="multiplicative"): (
            "Residual perturbation (multiplicative)", False),
        run.RunConfig(mechanism="neuraldp", noise_multiplier=1.0): ("NeuralDP", False),
    }
    for config, (name, formal) in names.items():
        checked = config.validated()
        assert checked.method_name() == name and checked.has_formal_guarantee == formal


def test_planned_steps():
    config = run.RunConfig(noise_multiplier=1.0, epochs=3, batch_size=64).validated()
    assert run.planned_steps(config, 1437) == 3 * math.ceil(1437 / 64)


def test_accountant_is_checked_against_the_mechanism():
    assert run.RunConfig(target_epsilon=1.0).validated().accountant == "pld"
    assert run.RunConfig(target_epsilon=1.0, accountant="rdp").validated().accountant == "rdp"
    with pytest.raises(ValueError, match="accountant"):
        run.RunConfig(target_epsilon=1.0, accountant="moments").validated()
    # Sampled Laplace has no RDP composition in dp_accounting: refused, with the way out.
    with pytest.raises(ValueError, match="--accountant=rdp cannot account for Laplace.*pld"):
        run.RunConfig(mechanism="laplace", target_epsilon=1.0, accountant="rdp").validated()


@pytest.mark.parametrize("kwargs,message", [
    (dict(fine_tune="lora"), "--fine_tune set.*add --backbone="),
    (dict(backbone_weights="w.h5"), "--backbone_weights set.*add --backbone="),
    (dict(lora_rank=8), "--lora_rank"),
    (dict(backbone="vgg16"), "backbone"),
    (dict(backbone="mobilenetv3small", fine_tune="all"), "fine_tune"),
    (dict(backbone="mobilenetv3small", fine_tune_blocks=0), "fine_tune_blocks"),
    (dict(backbone="mobilenetv3small", model="mlp"), "leave --model=auto"),
    (dict(backbone="mobilenetv3small", fine_tune_blocks=2), "would do nothing with "
                                                            "--fine_tune=head"),
    (dict(backbone="mobilenetv3small", fine_tune="last_blocks", lora_rank=2),
     "--lora_rank would do nothing"),
    (dict(backbone="mobilenetv3small", mechanism="residual_perturbation", gamma=0.5),
     "--backbone is for DP-SGD"),
    (dict(backbone="mobilenetv3small", mechanism="neuraldp", noise_multiplier=1.0),
     "--backbone is for DP-SGD"),
])
def test_backbone_settings_are_checked(kwargs, message):
    settings = dict(noise_multiplier=1.0)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=message):
        run.RunConfig(**settings).validated()


def test_backbone_settings_are_ledger_keys_and_the_weights_path_stays_local():
    config = run.RunConfig(backbone="mobilenetv3small", backbone_weights="/home/me/w.h5",
                           fine_tune="lora", fine_tune_blocks=2, lora_rank=8,
                           noise_multiplier=1.0).validated()
    assert (config.backbone, config.fine_tune, config.fine_tune_blocks, config.lora_rank) == (
        "mobilenetv3small", "lora", 2, 8)
    assert {"backbone", "fine_tune", "fine_tune_blocks", "lora_rank"} <= set(
        run_config.LEDGER_KEYS)
    assert "backbone_weights" in run_config.PATH_SETTINGS
    assert "backbone_weights" not in run_config.LEDGER_KEYS
    # No-DP fine-tuning is allowed (the comparison's baseline).
    assert run.RunConfig(backbone="convnexttiny", mechanism="none").validated().backbone
