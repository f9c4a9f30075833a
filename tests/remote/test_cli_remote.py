"""``corral cancel|status|doctor|clean --host``: the commands that act, run by corral on the
loopback login node (scripts/test-sshd.sh) against the real SLURM test cluster, from a
"laptop" that sees the work dir only through its SSH session (see test_laptop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import LoginNode
from .test_laptop import finish, laptop, laptop_env

pytestmark = pytest.mark.slurm

SCRIPT = """
import json, subprocess, sys, time
import corral

def nap(x):
    time.sleep(300)
    return x

def corral_cli(*argv):
    out = subprocess.run([sys.executable, "-m", "corral", *argv, "--host", "login"],
                         capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout, out.stderr

ex = corral.Executor(host="login", max_retries=0)
futures = [ex.submit(nap, x) for x in range(3)]
assert futures[0].batch  # asking for it submits the burst
while not all(f.job_id for f in futures):
    time.sleep(0.2)
code, out, err = corral_cli("cancel", "--all")
assert code == 0, err
print("CANCEL", out.strip())
for f in futures:
    try:
        f.result(timeout=120)
    except corral.JobCancelledError:
        print("SEEN cancelled")
code, out, err = corral_cli("status", "--json")
assert code == 0, err
print("STATUS", json.dumps([b["counts"] for b in json.loads(out)["batches"]]))
code, out, err = corral_cli("doctor", "--no-job", "--json")
print("DOCTOR", code, out.strip())
code, out, err = corral_cli("clean")
print("CLEAN", code, out.strip())
code, out, err = corral_cli("status", "--json")
print("AFTER", out.strip())
ex.shutdown(wait=False)
"""


def test_cancel_status_doctor_and_clean_on_a_host(node: LoginNode, tmp_path: Path) -> None:
    import json

    env = laptop_env(node, tmp_path)
    out = finish(laptop(node, tmp_path, SCRIPT, env), timeout=600)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if " " in line}
    assert lines["CANCEL"].startswith("cancelled nap-") and "cancelled through slurm" in lines["CANCEL"]
    assert out.count("SEEN cancelled") == 3  # the laptop's client saw the host's cancel
    assert json.loads(lines["STATUS"]) == [
        {"completed": 0, "failed": 0, "cancelled": 3, "lost": 0, "running": 0, "pending": 0}
    ]
    code, doctor = lines["DOCTOR"].split(" ", 1)
    checks = {c["check"]: c for c in json.loads(doctor)["checks"]}
    assert code == "0" and checks["backend"]["details"]["name"] == "slurm"
    assert (
        checks["work dir"]["status"] == "OK" and checks["work dir"]["details"]["path"] == env["REMOTE_WORK"]
    )
    assert checks["limits"]["details"]["max_array_size"] > 0
    assert lines["CLEAN"].startswith("0 removed batch nap-")
    assert json.loads(lines["AFTER"])["batches"] == []
