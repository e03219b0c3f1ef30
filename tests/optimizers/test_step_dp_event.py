"""optimizer.step_dp_event: one step's DpEvent, from the query's mechanism object."""

import dp_accounting

import tfdp


def test_the_step_event_is_the_mechanism_event():
    gaussian = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1)
    assert gaussian.step_dp_event == dp_accounting.GaussianDpEvent(1.1)
    laplace = tfdp.DPKerasSGDOptimizer(mechanism="laplace", l1_norm_clip=1.0, noise_multiplier=2.0)
    assert laplace.step_dp_event == dp_accounting.LaplaceDpEvent(2.0)
    # Microbatches of several examples double the sensitivity: half the multiplier composes.
    micro = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1, num_microbatches=4)
    assert micro.step_dp_event == dp_accounting.GaussianDpEvent(0.55)


def test_random_schedule_and_no_noise_events():
    released = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1,
                                        noise_schedule="random", noise_probability=0.5)
    assert isinstance(released.step_dp_event, dp_accounting.NonPrivateDpEvent)
    dropped = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1,
                                       noise_schedule="random", noise_probability=0.5,
                                       on_skip="drop")
    assert dropped.step_dp_event == dp_accounting.GaussianDpEvent(1.1)
    silent = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.0)
    assert isinstance(silent.step_dp_event, dp_accounting.NonPrivateDpEvent)
