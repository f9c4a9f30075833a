"""Every complete Python example of docs/joblib.md runs as written (on the local backend), as
tests/unit/test_docs.py does for the other pages; fragments ("...") and the loky side of the
side-by-side (no corral in it) are skipped."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "joblib.md"
BLOCKS = [
    pytest.param(code, id=f"{PAGE.name}:{n}")
    for n, code in enumerate(re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S))
    if "..." not in code and "import corral" in code
]


def test_the_page_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", BLOCKS)
def test_example_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {"PATH": str(Path(sys.executable).parent), "CORRAL_DIR": str(tmp_path / "work")}  # no SLURM
    if "PYTHONPATH" in os.environ:  # a work tree's own sources, where the venv's install points elsewhere
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env
    )
    assert out.returncode == 0, out.stderr
