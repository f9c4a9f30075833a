"""Every complete Python example in the docs runs as written (on the local backend).
Fragments, marked by "...", are skipped by design: they are shapes, not programs."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "docs" / "executor.md",
    ROOT / "docs" / "pool.md",
    ROOT / "docs" / "task.md",
    ROOT / "docs" / "resilience.md",
    ROOT / "docs" / "configuration.md",
    ROOT / "docs" / "cli.md",
    ROOT / "docs" / "environment.md",
    ROOT / "docs" / "sweep.md",
    ROOT / "docs" / "coming-from-submitit.md",
    ROOT / "docs" / "coming-from-dask-jobqueue.md",
    ROOT / "docs" / "coming-from-cluster-tools.md",
    ROOT / "docs" / "coming-from-pypoolparty.md",
]
BLOCKS = [
    pytest.param(code, id=f"{page.name}:{n}")
    for page in PAGES
    for n, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
    if "..." not in code and "import corral" in code
]


def test_the_docs_have_runnable_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", BLOCKS)
def test_example_runs(code: str, tmp_path: Path) -> None:
    # As a script, so that functions defined in it live in __main__, as in a user's script.
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": str(Path(sys.executable).parent), "CORRAL_DIR": str(tmp_path / "work")},  # no SLURM
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
