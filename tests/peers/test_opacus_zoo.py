"""peers/opacus_zoo.py, the Opacus peer of the benchmark, measures the zoo of models/zoo.py.

The script needs PyTorch, which this environment does not have: its table of models (a
plain literal) is read with `ast`, and every entry must be the zoo's, down to the Keras
model's parameter count (the script itself checks its PyTorch nets against the same
counts before it times anything). Fast: part of the default suite.
"""

import ast
import os
import pathlib
import re

import pytest

from tfdp.models import zoo

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEER = ROOT / "peers" / "opacus_zoo.py"


def _peer_models() -> dict:
    """The `MODELS = {...}` literal of the peer script, without running the script."""
    for node in ast.parse(PEER.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "MODELS" for target in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{PEER} has no module-level `MODELS = {{...}}` literal")


def _zoo_entry(name: str) -> dict:
    """What the peer script must say of the zoo model `name`."""
    built = zoo.build_zoo_model(name)
    return {"input_shape": tuple(built.data.input_shape), "num_classes": built.data.num_classes,
            "vocab_size": built.data.vocab_size, "batch_size": built.batch_size,
            "num_examples": built.data.num_examples,
            "parameters": int(built.model.count_params())}


def test_the_peer_measures_every_zoo_model_in_the_zoos_order():
    assert list(_peer_models()) == list(zoo.ZOO_NAMES)


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_the_peers_settings_and_parameter_count_are_the_zoos(name):
    assert _peer_models()[name] == _zoo_entry(name)


def test_the_known_parameter_counts():
    # Worked by hand from the architectures (e.g. the tutorial CNN: 8*8*16+16, 4*4*16*32+32,
    # 512*32+32, 32*10+10), so a change of one net on both sides still shows here.
    counts = {name: entry["parameters"] for name, entry in _peer_models().items()}
    assert counts == {"tutorial_cnn": 26010, "pneumonia_cnn": 1072066, "resnet": 78186,
                      "transformer": 353474, "lstm": 40386, "text_cnn": 344834,
                      "mlp": 535818}


# Spelled in two parts so that this line does not match itself.
_OUTSIDE = re.compile(r"\.\./shared/|/work" r"/shared")
_SKIPPED_DIRS = {".git", "site", "results", "build", "__pycache__", ".pytest_cache"}


def test_nothing_cites_a_file_outside_the_repository():
    cited = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith(".venv")
                   and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith((".py", ".md", ".toml", ".yml", ".yaml", ".cfg")) or name in (
                    "Makefile", "run"):
                path = pathlib.Path(folder) / name
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if _OUTSIDE.search(line):
                        cited.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert cited == [], "cites a file that is not in the repository:\n" + "\n".join(cited)


def _peer_record():
    """A record as peers/opacus_zoo.py writes it (one model, one loop that Opacus refused)."""
    return {
        "settings": {"torch": "2.13.0+cpu", "opacus": "1.6.0", "cpu": "AMD EPYC", "threads": 2,
                     "epochs": 5, "warmup_epochs": 1},
        "models": {"tutorial_cnn": {
            "batch_size": 256, "parameters": 26010,
            "results": {"nodp": {"seconds_per_epoch": 0.5}, "opacus": {"seconds_per_epoch": 1.0},
                        "opacus_ghost": {"error": "NotImplementedError: no ghost norm"}},
            "ratios": {"opacus": {"time_ratio": 2.0}}}},
    }


def test_the_results_page_shows_the_peers_figures_beside_tfdps(results_page):
    benchmark = {"settings": {}, "models": {"tutorial_cnn": {
        "batch_size": 256, "parameters": 26010,
        "results": {"nodp": {"seconds_per_epoch": 0.085}, "tfdp_fast": {"seconds_per_epoch": 0.21}},
        "ratios": {"tfdp_fast": {"time_ratio": 2.43}}}}}
    page = results_page.render(None, benchmark, _peer_record())
    # tfdp's row ends with the peer's ratio (ghost clipping's in brackets) ...
    assert "| tutorial_cnn | 256 | 26,010 | 0.085 | 0.210 | 2.43x | - | - | - | " \
           "2.00x (fails (NotImplementedError)) |" in page
    # ... and the peer's own table gives its seconds, its settings and what failed.
    assert "| tutorial_cnn | 256 | 26,010 | 0.500 | 1.000 | - | 2.00x | - |" in page
    assert "Opacus 1.6.0, AMD EPYC, 2 threads; best of 5 epochs" in page
    assert "- tutorial_cnn opacus_ghost: NotImplementedError: no ghost norm" in page
    assert "[opacus_peer.json](data/opacus_peer.json)" in page
    # Without the peer's record the page is as before: no peer column, no peer section.
    alone = results_page.render(None, benchmark)
    assert "The Opacus peer" not in alone and "Opacus DP" not in alone
    assert alone == results_page.render(None, benchmark, None)
    # The peer's record alone still shows.
    assert "| tutorial_cnn | 256 | 26,010 | 0.500 |" in results_page.render(None, None,
                                                                           _peer_record())
