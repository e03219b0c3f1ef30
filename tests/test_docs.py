"""The documentation site builds offline with warnings as errors, and its generated parts are current.

Fast tests (a few seconds each): part of the default `make test`. The code blocks of the
pages run in tests/test_readme.py (slow).
"""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly_and_loads_nothing_from_the_network(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert done.returncode == 0, done.stderr[-4000:]
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").exists() and (site / "api" / "core.html").exists()
    external = set()
    for page in pages:
        text = page.read_text()
        external |= set(re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="(https?://[^"]+)"',
                                   text))
    assert not external, f"pages load from the network: {sorted(external)[:5]}"
    # The API reference is generated from the docstrings, not left empty.
    core = (site / "api" / "core.html").read_text()
    assert "PrivacyPlan" in core and "make_private" in core and "register_layer_rule" in core


def test_the_results_page_is_what_its_data_gives(results_page):
    assert results_page.main(["--check"]) == 0


def _comparison():
    row = dict(method="Gaussian RegN-DP-SGD", accuracy=0.954, accuracy_std=0.004,
               epsilon=1.62, epsilon_noisy_steps_only=1.62, noisy_steps_percent=100.0,
               attack_auc=0.506, lira_auc=0.513, **{"lira_tpr_at_0.1pct_fpr": 0.0003},
               audit_epsilon_lower_bound=0.12, audit_epsilon_lower_bound_whitebox=0.49,
               audit_consistent=True, privacy_unit="example", target_epsilon=1.62)
    rann = dict(row, method="Gaussian RanN-DP-SGD", epsilon="inf", noisy_steps_percent=51.0,
                audit_epsilon_lower_bound_whitebox=4.68, audit_consistent=False)
    patient = dict(row, method="Gaussian RegN-DP-SGD per patient", privacy_unit="patient")
    no_dp = dict(method="No-DP", accuracy=0.983, epsilon="inf", epsilon_noisy_steps_only="inf",
                 noisy_steps_percent=0.0, audit_epsilon_lower_bound_whitebox=None,
                 privacy_unit="example", target_epsilon=None)
    return {
        "settings": {"seeds": 3, "base": {"model": "prior_linear", "epochs": 40, "delta": 1e-5,
                                          "accountant": "pld", "batch_size": 512,
                                          "optimizer": "sgd", "learning_rate": 0.5,
                                          "l2_norm_clip": 1.0},
                     "leakage": {"lira_shadows": 8, "audit_canaries": 1000}},
        "dataset": {"name": "digits", "num_train": 1437, "num_test": 360},
        "budget": "target epsilon 1.62", "notes": "eps: formal guarantee.",
        "table": [no_dp, row, rann, patient],
        "sweep": [dict(row, target_epsilon=0.5, accuracy=0.911),
                  dict(row, target_epsilon=1.0, accuracy=0.956)],
    }


def _benchmark():
    fast = {"seconds_per_epoch": 0.21, "peak_rss_mb": 800.0}
    return {
        "settings": {"tensorflow": "2.21.0", "keras": "3.15.1", "python": "3.13.0",
                     "cpu_count": 2, "tf_enable_onednn_opts": "1", "epochs": 3,
                     "warmup_epochs": 1, "rounds": 2, "quick": True},
        "unavailable": {"tfp_generic": "not run on Keras 3: Keras 2 only"},
        "models": {"tutorial_cnn": {
            "batch_size": 256, "parameters": 26010,
            "results": {"nodp": {"seconds_per_epoch": 0.085}, "tfdp_fast": fast,
                        "tfdp_fast_grid": {"error": "worker exit status 1"}},
            "ratios": {"tfdp_fast": {"time_ratio": 2.43, "memory_ratio": 1.09}},
            "plan_counts": {"rule": 4, "local": 0, "jacobian": 0}}},
    }


def test_the_results_page_renders_every_column_it_promises(results_page):
    page = results_page.render(_comparison(), _benchmark())
    assert "| Gaussian RegN-DP-SGD | 0.954 ± 0.004 | 1.62 | 1.62 | 100% |" in page
    assert "| Gaussian RanN-DP-SGD |" in page and "**VIOLATION**" in page and "| 4.68 |" in page
    assert "1.62 per patient" in page and "| No-DP | 0.983 | inf | inf | 0% |" in page
    assert "| epsilon 0.5 | epsilon 1 |" in page and "0.911" in page
    assert "| tutorial_cnn | 256 | 26,010 | 0.085 | 0.210 | 2.43x | 1.09x | - | 4 / 0 / 0 |" in page
    assert "--quick: a smoke test" in page and "worker exit status 1" in page
    assert "make results-page" in page
    # Rendering is a function of the data alone: the same JSON gives the same bytes.
    assert page == results_page.render(_comparison(), _benchmark())


def test_the_results_page_says_how_to_make_missing_data(results_page):
    page = results_page.render(None, None)
    assert "No comparison recorded yet. Run `make demo`" in page
    assert "No benchmark recorded yet. Run `make benchmark`" in page


def test_code_and_tests_cite_the_documentation_not_an_outside_file():
    citing = [str(path.relative_to(ROOT))
              for folder in ("tfdp", "models", "scripts", "tests", "tools")
              for path in (ROOT / folder).rglob("*.py")
              if "API.md" in path.read_text() and path.name != "test_docs.py"]
    assert not citing, f"cite docs/api/ instead of API.md in: {citing}"
