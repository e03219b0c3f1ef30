"""Reference values for tfdp's banded DP-MF from JAX-privacy 2.0.0 (an independent implementation).

Runs only in a separate environment, never in tfdp's (it must not import tfdp):

    python3 -m venv /work/.venv-jaxp
    /work/.venv-jaxp/bin/pip install jax-privacy==2.0.0     # jax 0.10.2, dp-accounting 0.6.0
    /work/.venv-jaxp/bin/python scripts/references/jax_privacy_banded_mf.py

and writes tests/mechanisms/references/jax_privacy_banded_mf.json, which
tests/mechanisms/test_banded_mf.py compares tfdp's figures with. Settings:

* epsilon: `jax_privacy.accounting.DpsgdTrainingAccountant` with `cycle_length=b`
  (q = B / (n // b), ceil(T / b) compositions; n divisible by b in every case, so
  q = B * b / n as in tfdp). PLD: `PldAccountantConfig(value_discretization_interval=1e-4)`,
  its default and tfdp's. RDP: `RdpAccountantConfig(orders=dp_accounting's
  DEFAULT_RDP_ORDERS)`, the orders tfdp's RdpAccountant uses; the figure with
  JAX-privacy's own default orders is recorded too ("rdp_jaxp_orders").
* sensitivity: `matrix_factorization.sensitivity.get_sensitivity_banded(C, min_sep=b,
  max_participations=1)` (largest column norm, the per-participation sensitivity of the
  amplified analysis) and with `max_participations=None` (every participation b apart),
  and `toeplitz.minsep_sensitivity_squared` where it applies (non-increasing >= 0 coefs),
  with C = `toeplitz.materialize_lower_triangular(coef, T)`.
* strategies: `toeplitz.optimal_max_error_strategy_coefs(b)` (the construction tfdp
  truncates and normalizes), and `toeplitz.optimize_banded_toeplitz(n=T, bands=b)` (mean
  prefix error) with its `toeplitz.loss` (also the loss of tfdp's coefficients below).
JAX runs in float64 (jax_enable_x64) so the figures carry more digits than the tests need.
"""

import json
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import dp_accounting  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from dp_accounting.rdp import rdp_privacy_accountant  # noqa: E402
from jax_privacy import accounting  # noqa: E402
from jax_privacy.matrix_factorization import sensitivity, toeplitz  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "tests", "mechanisms", "references", "jax_privacy_banded_mf.json")

DELTA = 1e-5
# (n, B, b, T, sigma): n divisible by b, B * b <= n.
EPSILON_CASES = [
    (60000, 256, 1, 2340, 1.1),   # tfdp's DP-SGD anchor (PLD 0.9182, RDP 1.0981)
    (60000, 256, 2, 2340, 1.1),
    (60000, 256, 4, 2340, 1.1),
    (60000, 256, 8, 2340, 1.1),
    (60000, 256, 4, 1000, 0.8),
    (60000, 256, 8, 100, 2.0),
    (60000, 100, 2, 1000, 0.8),
    (60000, 100, 8, 2340, 2.0),
    (10000, 100, 1, 1000, 1.1),
    (10000, 100, 2, 100, 0.8),
    (10000, 100, 4, 2340, 1.1),
    (10000, 100, 8, 1000, 2.0),
    (10000, 256, 2, 2340, 2.0),
    (10000, 256, 4, 100, 1.1),
    (10000, 256, 8, 1000, 0.8),
    (10000, 256, 8, 2340, 1.1),
]

# tfdp's coefficients, pasted from tfdp.mechanisms.banded_mf (never imported here).
TFDP_COEFFICIENTS = {
    "tfdp_default_b2": [0.8944271909999159, 0.4472135954999579],
    "tfdp_default_b4": [0.8197048313256959, 0.40985241566284797, 0.30738931174713596,
                        0.25615775978927996],
    "tfdp_default_b8": [0.7628523509056837, 0.38142617545284185, 0.2860696315896314,
                        0.23839135965802616, 0.20859243970077287, 0.18773319573069558,
                        0.17208876275313761, 0.15979670827077067],
    "tfdp_optimized_b4_T100": [0.6829825762867355, 0.48280221399986795, 0.4144575607734795,
                               0.3586945120339266],
    "tfdp_optimized_b8_T1000": [0.5004987413700829, 0.38678821906783684, 0.35632609914386276,
                                0.3380476475501981, 0.3233950543057951, 0.3092971840237428,
                                0.29311908466345993, 0.26922755346282706],
}
SENSITIVITY_STEPS = (7, 64, 250)
OPTIMIZE_CASES = [(100, 4), (1000, 8), (2340, 16)]  # (T, b)


def epsilon(n, batch, bands, steps, sigma, config):
    params = accounting.DpParams(noise_multipliers=sigma, num_samples=n, delta=DELTA,
                                 batch_size=batch, cycle_length=bands)
    return float(accounting.DpsgdTrainingAccountant(config).compute_epsilon(steps, params))


def epsilon_rows():
    pld = accounting.PldAccountantConfig(value_discretization_interval=1e-4)
    rdp = accounting.RdpAccountantConfig(orders=list(rdp_privacy_accountant.DEFAULT_RDP_ORDERS))
    rdp_jaxp = accounting.RdpAccountantConfig()
    rows = []
    for n, batch, bands, steps, sigma in EPSILON_CASES:
        assert n % bands == 0 and batch * bands <= n
        row = {"num_examples": n, "batch_size": batch, "bands": bands, "num_steps": steps,
               "noise_multiplier": sigma, "delta": DELTA,
               "pld": epsilon(n, batch, bands, steps, sigma, pld),
               "rdp": epsilon(n, batch, bands, steps, sigma, rdp),
               "rdp_jaxp_orders": epsilon(n, batch, bands, steps, sigma, rdp_jaxp)}
        print(row, flush=True)
        rows.append(row)
    return rows


def sensitivity_rows():
    rng = np.random.default_rng(20240601)
    vectors = dict(TFDP_COEFFICIENTS)
    for bands in (3, 5, 8):
        vectors[f"random_positive_b{bands}"] = rng.uniform(0.05, 1.0, bands).tolist()
    rows = []
    for name, coef in vectors.items():
        coef_j = jnp.asarray(coef, dtype=jnp.float64)
        bands = len(coef)
        decreasing = bool(np.all(np.diff(coef) <= 0) and np.all(np.asarray(coef) >= 0))
        for steps in SENSITIVITY_STEPS:
            if bands > steps:
                continue
            matrix = toeplitz.materialize_lower_triangular(coef_j, steps)
            row = {"name": name, "coefficients": coef, "num_steps": steps,
                   "single": float(sensitivity.get_sensitivity_banded(
                       matrix, min_sep=bands, max_participations=1)),
                   "minsep_all": float(sensitivity.get_sensitivity_banded(
                       matrix, min_sep=bands, max_participations=None)),
                   "minsep_2": float(sensitivity.get_sensitivity_banded(
                       matrix, min_sep=bands, max_participations=2))}
            if decreasing:
                row["toeplitz_minsep_all"] = float(jnp.sqrt(toeplitz.minsep_sensitivity_squared(
                    coef_j, min_sep=bands, n=steps)))
            rows.append(row)
    return rows


def strategy_rows():
    rows = {"optimal_max_error_strategy_coefs": {
        str(b): np.asarray(toeplitz.optimal_max_error_strategy_coefs(b)).tolist()
        for b in (1, 2, 4, 8, 16)}}
    optimized = []
    for steps, bands in OPTIMIZE_CASES:
        coef = toeplitz.optimize_banded_toeplitz(n=steps, bands=bands)
        optimized.append({"num_steps": steps, "bands": bands,
                          "coefficients": np.asarray(coef).tolist(),
                          "loss_mean": float(toeplitz.loss(coef, steps, jnp.mean)),
                          "loss_max": float(toeplitz.loss(coef, steps, jnp.max))})
        print(optimized[-1], flush=True)
    rows["optimize_banded_toeplitz"] = optimized
    rows["loss_of_tfdp_coefficients"] = [
        {"name": name, "num_steps": steps, "coefficients": coef,
         "loss_mean": float(toeplitz.loss(jnp.asarray(coef), steps, jnp.mean)),
         "loss_max": float(toeplitz.loss(jnp.asarray(coef), steps, jnp.max))}
        for name, coef in TFDP_COEFFICIENTS.items() for steps in (100, 1000)]
    return rows


def main():
    from importlib.metadata import version
    data = {
        "generated_by": "scripts/references/jax_privacy_banded_mf.py",
        "versions": {"jax_privacy": version("jax-privacy"), "jax": jax.__version__,
                     "dp_accounting": version("dp-accounting"),
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "settings": {"pld_value_discretization_interval": 1e-4,
                     "rdp_orders": "dp_accounting DEFAULT_RDP_ORDERS (rdp); "
                                   "jax_privacy's default (rdp_jaxp_orders)",
                     "jax_enable_x64": True},
        "epsilon": epsilon_rows(),
        "sensitivity": sensitivity_rows(),
        "strategies": strategy_rows(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
