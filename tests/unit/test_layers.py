"""The layers of the package are declared in pyproject.toml (import-linter contracts) and
checked here: on the tree as it is, and on a copy with one deliberately added upward import
and one import cycle, which the check must refuse."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(source: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run(
        [str(LINT), str(config), "--no-cache"],
        capture_output=True, text=True, env=env, cwd=source, timeout=120,
    )  # fmt: skip


def copy_package(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "corral", source / "corral", ignore=shutil.ignore_patterns("__pycache__"))
    return source


def test_the_tree_keeps_its_layers_and_has_no_cycles() -> None:
    result = lint(ROOT / "src", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "corral's layers KEPT" in result.stdout
    assert "no import cycles, at any depth KEPT" in result.stdout


def test_an_import_that_runs_back_up_is_refused(tmp_path: Path) -> None:
    source = copy_package(tmp_path)
    store = source / "corral" / "store" / "batch.py"
    store.write_text(store.read_text() + "\nfrom ..frontends import executor  # noqa\n")
    result = lint(source, ROOT / "pyproject.toml")
    assert result.returncode != 0
    assert "corral's layers BROKEN" in result.stdout
    assert "corral.store.batch -> corral.frontends.executor" in result.stdout


def test_an_import_cycle_is_refused(tmp_path: Path) -> None:
    source = copy_package(tmp_path)
    planning = source / "corral" / "engine" / "planning.py"  # cluster imports planning
    planning.write_text(planning.read_text() + "\nfrom . import cluster  # noqa\n")
    result = lint(source, ROOT / "pyproject.toml")
    assert result.returncode != 0
    assert "no import cycles, at any depth BROKEN" in result.stdout
