"""A map over SSH against the same map run on the login node, in one run.

    python benchmarks/remote.py                  # 1000 trivial calls, 5 rounds
    python benchmarks/remote.py --calls 10000 --repeat 3

The login node is the loopback sshd of the test command (scripts/test-sshd.sh), its user
``corralr`` submitting to the real SLURM test cluster. Rounds alternate, A B A B:

* over SSH: ``Executor(host="login").map(abs, range(N))``: every file operation and scheduler
  command goes through the one SSH session to the login node's agent;
* on the login node: ``Executor("slurm").map`` of the same calls by a process on that node
  (the local transport), the baseline.

Each figure is the median of --repeat rounds, the executors made (and the host checked) before
the clock starts, as a script that maps more than once pays that once. It prints the ratio
(target: at most 2x) and the requests over the session per map. Needs the test cluster
(``bash scripts/test-cluster.sh start``); starts the sshd itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corral  # noqa: E402


def login_node() -> dict[str, str]:
    subprocess.run(["bash", str(ROOT / "scripts" / "test-sshd.sh"), "start"], check=True, capture_output=True)
    said = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test-sshd.sh"), "env"], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in said.splitlines() if "=" in line)


def configure(node: dict[str, str], folder: Path) -> None:
    config = folder / "config" / "corral"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(
        textwrap.dedent(f"""
        [hosts.login]
        ssh = "corral-login"
        ssh_config = "{node["CORRAL_SSHD_STATE"]}/ssh_config"
        python = "{node["CORRAL_REMOTE_VENV"]}/bin/python"
        directory = "~/corral-bench"
        backend = "slurm"
        """)
    )
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")


def timed(ex: corral.Executor, calls: int) -> float:
    start = time.perf_counter()
    total = sum(ex.map(abs, range(calls)))
    elapsed = time.perf_counter() - start
    assert total == calls * (calls - 1) // 2
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    node = login_node()
    with tempfile.TemporaryDirectory() as folder:
        configure(node, Path(folder))
        remote = corral.Executor(host="login")
        here = corral.Executor("slurm", directory=str(Path(folder) / "work"))
        transport = remote.cluster.backend.transport
        plain, counted = transport.request, [0]

        def request(op: str, *a: object, **kw: object) -> object:
            counted[0] += 1
            return plain(op, *a, **kw)

        transport.request = request  # type: ignore[method-assign]
        timed(remote, 10), timed(here, 10)  # warm: limits read, interpreters cached
        over_ssh, on_node, requests = [], [], []
        for _ in range(args.repeat):
            counted[0] = 0
            over_ssh.append(timed(remote, args.calls))
            requests.append(counted[0])
            on_node.append(timed(here, args.calls))
        remote.shutdown(), here.shutdown()
    a, b = statistics.median(over_ssh), statistics.median(on_node)
    print(f"map of {args.calls} trivial calls on the SLURM test cluster, median of {args.repeat}")
    asked = statistics.median(requests)
    print(f"  over SSH (host=login)     {a:7.2f} s   ({asked:.0f} requests over the session)")
    print(f"  on the login node         {b:7.2f} s")
    print(f"  ratio                     {a / b:7.2f}x   (target: at most 2x)")


if __name__ == "__main__":
    main()
