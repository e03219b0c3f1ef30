"""Every code block of the README and of docs/ runs as written, in a fresh process and folder.

A block is a fenced block whose language is python (run with this interpreter) or sh
(run with bash -e, in a folder where `.venv`, `scripts/` and `recipes/` point at this
checkout's, so `.venv/bin/python scripts/train.py ...` works as the pages write it). A
block that cannot run here (it needs a model server, several machines, or it is the test
suite itself) carries the marker `<!-- not run: why -->` on the line just before its
fence, and is reported as skipped with that reason. Any other fence must name one of the
displayed-only languages (text, json, toml, yaml), so no runnable block escapes.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").rglob("*.md"))
RUNNABLE = {"python": "python", "sh": "sh", "bash": "sh", "console": "sh"}
DISPLAY_ONLY = {"text", "json", "toml", "yaml"}
# The line before a fence may say why the block is not run.
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$")
# Folders of this checkout a shell block may name by their relative path.
_LINKED = ("scripts", "recipes", "models")


def _blocks(page: pathlib.Path):
    """(page-relative id, language, code, not-run reason or None) of each fenced block."""
    text = page.read_text()
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = _NOT_RUN.search(before)
        name = f"{page.relative_to(ROOT)}:{line}"
        yield name, match.group(1), match.group(2), reason.group(1) if reason else None


BLOCKS = [block for page in PAGES for block in _blocks(page)]
RUN = [b for b in BLOCKS if b[1] in RUNNABLE]


def test_the_pages_have_runnable_blocks():
    assert any(name.startswith("README.md") and lang == "python" for name, lang, _, _ in RUN), (
        "the README's quick start is a ```python block")
    assert any(name.startswith("docs") for name, *_ in RUN)


def test_every_fence_names_its_language():
    unknown = [(name, lang) for name, lang, _, _ in BLOCKS
               if lang not in RUNNABLE and lang not in DISPLAY_ONLY]
    assert not unknown, (f"fences without a runnable ({sorted(RUNNABLE)}) or displayed-only "
                         f"({sorted(DISPLAY_ONLY)}) language: {unknown}")


def _workdir(tmp_path: pathlib.Path) -> None:
    """A folder where `.venv/bin/python scripts/...` means this interpreter and checkout."""
    (tmp_path / ".venv").symlink_to(pathlib.Path(sys.executable).parents[1])
    for name in _LINKED:
        (tmp_path / name).symlink_to(ROOT / name)


# Runs scripts or whole trainings in subprocesses: part of CI (TFDP_RUN_SLOW=1), not of the
# default `make test` (the two checks of the fences above are fast).
@pytest.mark.slow
@pytest.mark.parametrize("name, lang, code, reason", RUN, ids=[b[0] for b in RUN])
def test_code_block_runs_as_written(name, lang, code, reason, tmp_path):
    if reason is not None:
        pytest.skip(f"not run: {reason}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if RUNNABLE[lang] == "python":
        script = tmp_path / "snippet.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    else:
        _workdir(tmp_path)
        script = tmp_path / "snippet.sh"
        script.write_text(code)
        command = ["bash", "-e", str(script)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{name}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
