"""The examples run as a new user would run them."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_without_slurm(tmp_path: Path) -> None:
    # Only the interpreter's folder on PATH: no sbatch, no scontrol, as on a laptop.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "CORRAL_DIR": str(tmp_path / "work")}
    script = ROOT / "examples" / "quickstart.py"
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "backend: local" in out.stdout
    assert "primes below  80000: 7837" in out.stdout
    assert re.search(r"job L\d+-\d+_0: 168 primes below 1000", out.stdout)  # the element that ran it
    assert "the call failed as it should: ValueError: math domain error" in out.stdout
