"""corral from a "laptop": the front-ends with ``host=``, against the loopback login node
(scripts/test-sshd.sh) and the real SLURM test cluster, whose jobs run as the remote user.

The laptop is a separate process in a mount namespace of its own, where the remote user's
home is an empty tmpfs: it cannot see the work dir or anything else of the login node's
files but through its SSH session, as on a real laptop (the test runs as root, which could
otherwise read them all)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import corral

from .conftest import LoginNode

ROOT = Path(__file__).resolve().parents[2]


def laptop_env(
    node: LoginNode, tmp_path: Path, *, ssh: str = "corral-login", extra: str = ""
) -> dict[str, str]:
    """The environment of a laptop process: its own config (a host "login", its python
    written under ~ as a user would), control sockets and working directory; a work dir of
    its own on the login node."""
    config = tmp_path / "config" / "corral"
    config.mkdir(parents=True, exist_ok=True)
    work = f"~/corral-tests/{uuid.uuid4().hex[:10]}"
    (config / "config.toml").write_text(
        textwrap.dedent(f"""
        [hosts.login]
        ssh = "{ssh}"
        ssh_config = "{node.config}"
        python = "{node.python.replace(node.home, "~", 1)}"
        directory = "{work}"
        backend = "slurm"
        time = "5:00"
        {extra}
        """)
    )
    config.chmod(0o700)
    run = tempfile.mkdtemp(prefix="cl-", dir="/tmp")  # short: control sockets live there
    return {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_RUNTIME_DIR": run, "PYTHONPATH": str(ROOT / "src"),
        "REMOTE_WORK": work.replace("~", node.home),
        "CORRAL_POLL_MAX": "3",
    }  # fmt: skip


def laptop(
    node: LoginNode, tmp_path: Path, code: str, env: dict[str, str], **popen: object
) -> subprocess.Popen[str]:
    """Start ``code`` as the laptop's script, in a namespace where the login node's files
    cannot be seen (an empty tmpfs over the remote user's home)."""
    script = tmp_path / f"laptop-{uuid.uuid4().hex[:6]}.py"
    script.write_text(textwrap.dedent(code))
    hide = f"mount -t tmpfs none {node.home} && exec {sys.executable} {script}"
    return subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", hide], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,  # type: ignore[arg-type]
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # the namespace's shell execs the script: this is the script itself
        out, err = proc.communicate()
        pytest.fail(f"the laptop's script did not end within {timeout} s:\n{out}\n{err}")
    assert proc.returncode == 0, f"the laptop's script failed ({proc.returncode}):\n{out}\n{err}"
    return out


def session(host: str) -> str:
    """A laptop's script that uses ``host`` every way a day does: three maps, then, from
    fresh processes, ``corral status --host``, an ``attach`` and ``corral logs --host``."""
    return textwrap.dedent(
        """
        import os, subprocess, sys
        import corral

        def square(x):
            return x * x

        with corral.Executor(host="HOST") as ex:
            assert list(ex.map(square, range(1000))) == [x * x for x in range(1000)]
            assert sum(ex.map(square, range(10))) == 285
            futures = [ex.submit(square, x) for x in range(5)]
            assert [f.result() for f in futures] == [0, 1, 4, 9, 16]
        # the work dir is not to be seen here: only through the session
        assert not os.path.exists(os.environ["REMOTE_WORK"])
        status = subprocess.run([sys.executable, "-m", "corral", "status", "--host", "HOST"],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        print(status.stdout)
        batches = [line.split()[0] for line in status.stdout.splitlines() if line.startswith("square-")]
        attach = subprocess.run([sys.executable, "-c",
            "import corral, sys; print(sum(corral.attach(sys.argv[1], host='HOST').results(timeout=120)))",
            batches[0]], capture_output=True, text=True, timeout=180)
        assert attach.returncode == 0, attach.stderr
        print("ATTACHED", attach.stdout.strip())
        logs = subprocess.run([sys.executable, "-m", "corral", "logs", batches[0], "7", "--host", "HOST"],
                              capture_output=True, text=True, timeout=120)
        assert logs.returncode == 0, logs.stderr
        print(logs.stdout)
        """
    ).replace("HOST", host)


def test_three_maps_status_logs_and_attach_take_one_authentication(node: LoginNode, tmp_path: Path) -> None:
    env = laptop_env(node, tmp_path)
    before = node.logins()
    code = session("login")
    out = finish(laptop(node, tmp_path, code, env))
    assert f"ATTACHED {sum(x * x for x in range(1000))}" in out
    assert "square" in out  # corral status, run on the host, listed the batches
    assert "call 7 of square-" in out and "completed" in out  # corral logs, there too
    assert node.logins() - before == 1


def test_a_map_through_proxyjump(node: LoginNode, tmp_path: Path) -> None:
    env = laptop_env(node, tmp_path, ssh="corral-behind")
    before = node.logins("jump")
    code = """
        import corral
        with corral.Executor(host="login") as ex:
            print(sum(ex.map(abs, range(-50, 50))))
    """
    assert finish(laptop(node, tmp_path, code, env)).strip() == "2500"
    assert node.logins("jump") - before == 1


def test_an_unknown_host_key_is_refused_before_anything_is_written(node: LoginNode, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    known = tmp_path / "known_hosts"
    known.write_text("")
    config.write_text(Path(node.config).read_text().replace(str(node.state / "known_hosts"), str(known)))
    assert str(known) in config.read_text()
    env = laptop_env(node, tmp_path)
    toml = Path(env["XDG_CONFIG_HOME"], "corral", "config.toml")
    toml.write_text(toml.read_text().replace(node.config, str(config)))
    code = """
        import corral
        try:
            corral.Executor(host="login")
        except corral.CorralError as exc:
            print("REFUSED", type(exc).__name__, exc)
    """
    out = finish(laptop(node, tmp_path, code, env))
    assert "REFUSED PreflightError" in out and "host key" in out.lower(), out
    assert not os.path.exists(env["REMOTE_WORK"])
    queue = subprocess.run(["squeue", "-h", "-u", node.user], capture_output=True, text=True, timeout=30)
    assert queue.stdout.strip() == ""


def test_the_job_gets_the_login_nodes_environment_and_env_never_the_laptops(
    node: LoginNode, tmp_path: Path
) -> None:
    env = laptop_env(node, tmp_path, extra='setup = ["export FROM_SETUP=yes"]\nenv = { STAGE = "remote" }')
    env["LAPTOP_ONLY"] = "1"
    code = """
        import os
        import corral

        def look():
            import getpass, os, sys
            return (getpass.getuser(), os.environ.get("LAPTOP_ONLY"), os.environ.get("STAGE"),
                    os.environ.get("FROM_SETUP"), sys.executable, os.getcwd())

        with corral.Executor(host="login") as ex:
            print(ex.submit(look).result())
    """
    out = finish(laptop(node, tmp_path, code, env))
    assert repr((node.user, None, "remote", "yes", node.python, node.home)) in out, out


def test_a_100_mb_argument_and_result_round_trip_and_stay_private(node: LoginNode, tmp_path: Path) -> None:
    env = laptop_env(node, tmp_path, extra='memory = "1G"')
    code = """
        import hashlib, os
        import corral

        def echo(data):
            return hashlib.sha256(data).hexdigest(), data[::-1]

        data = os.urandom(100 * 2**20)
        with corral.Executor(host="login") as ex:
            digest, back = ex.submit(echo, data).result(timeout=240)
        assert digest == hashlib.sha256(data).hexdigest()
        assert back == data[::-1]
        print("ROUND TRIP OK")
    """
    assert "ROUND TRIP OK" in finish(laptop(node, tmp_path, code, env), timeout=400)
    modes = {}
    for folder, _dirs, files in os.walk(env["REMOTE_WORK"]):
        modes[folder] = os.stat(folder).st_mode & 0o777
        for name in files:
            path = os.path.join(folder, name)
            modes[path] = os.stat(path).st_mode & 0o777
    assert modes and all(mode == (0o700 if os.path.isdir(path) else 0o600) for path, mode in modes.items()), {
        p: oct(m) for p, m in modes.items() if m not in (0o700, 0o600)
    }


def test_quoting_in_arguments_and_paths_creates_nothing_on_either_host(
    node: LoginNode, tmp_path: Path
) -> None:
    marker = f"/tmp/corral-injected-{uuid.uuid4().hex[:8]}"
    nasty = f"$(touch {marker}) `touch {marker}` ' \" ; touch {marker}"
    env = laptop_env(node, tmp_path)
    toml = Path(env["XDG_CONFIG_HOME"], "corral", "config.toml")
    work = "~/corral tests/$(touch " + marker + ") `x`"
    toml.write_text(
        toml.read_text().replace('directory = "', 'directory = "' + work.replace('"', '\\\\"') + "/x")
    )
    code = f"""
        import os
        import corral

        def shout(text):
            import os
            return text.upper(), os.environ["NASTY"], os.getcwd()

        nasty = {nasty!r}
        with corral.Executor(host="login", env={{"NASTY": nasty}}) as ex:
            assert ex.submit(shout, nasty).result()[:2] == (nasty.upper(), nasty)
            print("SAME", ex.cluster.root)
    """
    out = finish(laptop(node, tmp_path, code, env))
    assert f"SAME {node.home}/corral tests/$(touch {marker}) `x`/x" in out, out
    assert not os.path.exists(marker)


def test_a_sleeping_laptop_loses_nothing_and_reruns_nothing(node: LoginNode, tmp_path: Path) -> None:
    env = laptop_env(node, tmp_path)
    marks = f"{node.home}/corral-marks-{uuid.uuid4().hex[:8]}"
    code = f"""
        import os, sys, time
        import corral

        def mark(x):
            import os, time
            time.sleep(2)  # the burst's calls may share one element: 12 s in all
            os.makedirs({marks!r}, exist_ok=True)
            with open(os.path.join({marks!r}, f"{{x}}-{{os.getpid()}}"), "w"):
                pass
            return x * 10

        with corral.Executor(host="login") as ex:
            futures = [ex.submit(mark, x) for x in range(6)]
            ex.cluster.flush()
            print("SUBMITTED", flush=True)
            print("RESULTS", [f.result(timeout=600) for f in futures], flush=True)
    """
    proc = laptop(node, tmp_path, code, env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "SUBMITTED", line + proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGSTOP)  # the lid closes
    try:
        sockets = Path(env["XDG_RUNTIME_DIR"], "corral", "ssh")
        for socket in sockets.iterdir():  # the network goes: the master connection is gone
            subprocess.run(["ssh", "-F", node.config, "-S", str(socket), "-O", "exit", "corral-login"],
                           capture_output=True, timeout=30)  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(os.listdir(marks) if os.path.isdir(marks) else []) < 6:
            time.sleep(1)
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGCONT)  # the lid opens
    out = finish(proc, timeout=600)
    assert "RESULTS [0, 10, 20, 30, 40, 50]" in out
    ran = sorted(name.split("-")[0] for name in os.listdir(marks))
    assert ran == [str(x) for x in range(6)]  # each call ran once


def test_each_tick_is_one_request_and_a_map_costs_the_same_requests_whatever_its_size(
    node: LoginNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = laptop_env(node, tmp_path)
    for name in ("XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "CORRAL_POLL_MAX"):
        monkeypatch.setenv(name, env[name])
    ex = corral.Executor(host="login")
    transport = ex.cluster.backend.transport
    asked: list[tuple[str, str, str]] = []  # (thread, op, command)
    plain = transport.request

    def counted(op: str, *args: object, **kw: object) -> object:
        command = str(args[0][0]) if op == "run" and args and isinstance(args[0], list) else ""
        asked.append((threading.current_thread().name, op, command))
        return plain(op, *args, **kw)

    transport.request = counted  # type: ignore[method-assign]
    outside: dict[int, int] = {}
    try:
        for n in (10, 100_000):
            asked.clear()
            assert sum(ex.map(abs, range(n))) == n * (n - 1) // 2
            poll = [(op, command) for thread, op, command in asked if thread == "corral-poll"]
            scans = sum(op == "scan" for op, _ in poll)
            # A tick is one request, the scan of the batch's streams; the scheduler's commands
            # (a status query now and then, cancelling idle elements, widening) come apart, and
            # the end of a batch sweeps its folders once (the last map's may end in this round).
            scheduler = ("squeue", "sacct", "scancel", "scontrol")
            others = [(op, command) for op, command in poll if op != "scan" and command not in scheduler]
            assert scans >= 1 and others in (
                [],
                [("sweep_temporaries", "")] * 1,
                [("sweep_temporaries", "")] * 2,
            )
            outside[n] = sum(thread != "corral-poll" for thread, _, _ in asked)
    finally:
        ex.shutdown()
    assert outside[100_000] <= 1.2 * outside[10], outside


def test_a_tick_over_several_live_batches_is_still_one_request(node: LoginNode, tmp_path: Path) -> None:
    """Three maps live at once: each tick reads their three batch folders in one request
    (scan_many), not one request per batch."""
    env = laptop_env(node, tmp_path)
    gate = f"{node.home}/corral-gate-{uuid.uuid4().hex[:8]}"
    code = f"""
        import json, threading, time
        import corral

        def gated(x):
            import os, time
            while not os.path.exists({gate!r}):
                time.sleep(0.05)
            return x

        with corral.Pool(host="login", progress=False, echo=False) as pool:
            transport = pool.cluster.backend.transport
            asked = []
            plain = transport.request

            def counted(op, *args, **kw):
                asked.append((threading.current_thread().name, op))
                return plain(op, *args, **kw)

            transport.request = counted
            results = [pool.map_async(gated, range(2)) for _ in range(3)]
            print("SUBMITTED", flush=True)
            assert [r.get(timeout=300) for r in results] == [[0, 1]] * 3
        print("ASKED", json.dumps([op for thread, op in asked if thread == "corral-poll"]), flush=True)
    """
    proc = laptop(node, tmp_path, code, env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "SUBMITTED", line + (proc.stderr.read() if proc.stderr else "")
    try:
        time.sleep(3)  # ticks pass while the three batches wait on the gate
    finally:
        Path(gate).touch()
    try:
        out = finish(proc, timeout=300)
    finally:
        os.unlink(gate)
    (asked,) = [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("ASKED ")]
    assert "scan_many" in asked, asked
    first, last = asked.index("scan_many"), len(asked) - 1 - asked[::-1].index("scan_many")
    assert "scan" not in asked[first:last], asked  # no tick looked at a batch on its own meanwhile


def test_a_module_beside_the_laptops_script_is_sent_along(node: LoginNode, tmp_path: Path) -> None:
    """helper.py lives in the laptop's folder, which the remote user cannot read (pytest's
    folders are root's alone): the jobs can only run it if it travels with the calls."""
    (tmp_path / "helper.py").write_text("def triple(x):\n    return 3 * x\n")
    assert os.stat(tmp_path.parents[1]).st_mode & 0o077 == 0  # no other user reaches it
    env = laptop_env(node, tmp_path)
    code = """
        import corral
        import helper
        with corral.Executor(host="login") as ex:
            print("TRIPLED", list(ex.map(helper.triple, range(4))))
    """
    assert "TRIPLED [0, 3, 6, 9]" in finish(laptop(node, tmp_path, code, env))


SWEEP = """
import os, subprocess, sys, time
from corral import sweep

def train(config):
    loss = 0.0
    for epoch in range(1, 10):
        time.sleep(0.05)
        loss = config["q"] + 1.0 / epoch
        sweep.log(epoch, loss=loss)
    return loss

space = {"q": sweep.grid([0.5, 0.3, 0.9, 0.7, 0.0, 0.8, 0.2, 0.6, 0.4])}
result = sweep.Sweep(train, space, metric="loss", scheduler=sweep.ASHA(min_t=1, max_t=9), max_running=4,
                     name="far", host="login", progress=False).run()
assert result.best().config == {"q": 0.0} and result.best().step == 9, result.table()
assert {t.status for t in result.trials} == {"completed", "pruned"}, result.table()
assert not os.path.exists(os.environ["REMOTE_WORK"])  # only through the session
status = subprocess.run([sys.executable, "-m", "corral", "sweep", "status", "far", "--host", "login"],
                        capture_output=True, text=True, timeout=120)
assert status.returncode == 0, status.stderr
print(status.stdout)
ATTACH = ("from corral import sweep; r = sweep.attach('far', host='login', progress=False); "
          "print('BEST', r.best().config)")
again = subprocess.run([sys.executable, "-c", ATTACH], capture_output=True, text=True, timeout=180)
assert again.returncode == 0, again.stderr
print(again.stdout)
"""


def test_a_sweep_from_the_laptop_prunes_on_the_cluster_with_one_authentication(
    node: LoginNode, tmp_path: Path
) -> None:
    env = laptop_env(node, tmp_path)
    before = node.logins()
    out = finish(laptop(node, tmp_path, SWEEP, env))
    assert "BEST {'q': 0.0}" in out
    lines = out.splitlines()
    assert lines[0].startswith("sweep far (loss, min) in ") and "9/9 done" in lines[1]
    assert node.logins() - before == 1
