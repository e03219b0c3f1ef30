"""The installed layout: every package listed, models/ and scripts/ inside tfdp, console scripts."""

import importlib
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_every_package_folder_is_listed_for_installation():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"tfdp.models", "tfdp.scripts"}
    for folder, _, files in os.walk(os.path.join(ROOT, "tfdp")):
        if "__init__.py" in files:
            found.add(os.path.relpath(folder, ROOT).replace(os.sep, "."))
    assert listed == found
    # No generic top-level `models` or `scripts` package goes to site-packages.
    assert not any(name.split(".")[0] != "tfdp" for name in listed)


def test_models_and_scripts_are_importable_under_tfdp():
    package_dir = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert package_dir == {"tfdp.models": "models", "tfdp.scripts": "scripts"}
    import tfdp.models

    assert os.path.samefile(os.path.dirname(tfdp.models.__file__), os.path.join(ROOT, "models"))
    assert "mlp" in tfdp.models.available_models()


def test_console_scripts_point_at_each_scripts_cli():
    scripts = _pyproject()["project"]["scripts"]
    assert set(scripts) >= {"tfdp-train", "tfdp-compare", "tfdp-evaluate", "tfdp-export",
                            "tfdp-epsilon", "tfdp-serving-client", "tfdp-benchmark"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_nothing_edits_sys_path():
    needle = "sys.path" + ".insert"  # spelled in two parts so that this file does not match
    offenders = []
    for top in ("tfdp", "models", "scripts", "tests"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and needle in open(path).read():
                    offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []


def test_version_is_the_one_pyproject_declares():
    import tfdp

    assert tfdp.__version__ == _pyproject()["project"]["version"]
