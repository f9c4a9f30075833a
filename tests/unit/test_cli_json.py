"""``--json`` on the read commands, and ``corral doctor``, on the local backend; the doctor's
parsers on recorded scheduler output."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pytest

import corral
from corral import sweep
from corral.cli.app import main
from corral.cli.doctor import parse_partitions, parse_version
from corral.store import records


def shaky(x: int) -> int:
    print(f"out {x}\x1b]0;title\x07")
    if x == 1:
        raise ValueError("bad \u202e input")
    return x


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_document(out: str) -> object:
    lines = out.splitlines()
    assert len(lines) == 1 and out.isascii()  # one line of ASCII: nothing in it drives a terminal
    return json.loads(lines[0])


@pytest.fixture
def batch(make_executor, workdir: str) -> str:  # type: ignore[no-untyped-def]
    ex = make_executor("local")
    ex.map(shaky, range(3))
    ex.shutdown(wait=True)
    (path,) = records.list_batches(workdir)
    return path


def test_status_json(batch: str, workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--json", "--dir", workdir)
    doc = one_document(out)
    assert code == 0
    assert doc == {
        "work_dir": workdir,
        "batches": [
            {
                "name": os.path.basename(batch), "path": batch, "function": "shaky", "backend": "local",
                "created": records.summarize(batch).created, "calls": 3, "counts": {
                    "completed": 2, "failed": 1, "cancelled": 0, "lost": 0, "running": 0, "pending": 0
                },
                "job_ids": records.summarize(batch).job_ids,
            }
        ],
    }  # fmt: skip


def test_status_of_one_batch_json(batch: str, workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", os.path.basename(batch), "--json", "--dir", workdir)
    doc = one_document(out)
    assert code == 0 and isinstance(doc, dict)
    assert doc["statuses"] == ["completed", "failed", "completed"]
    assert doc["failures"] == [
        {"call": 1, "attempt": 0, "type": "builtins.ValueError", "message": "bad \u202e input"}
    ]
    assert doc["lost"] == []


def test_logs_json(batch: str, workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "logs", os.path.basename(batch), "1", "--json", "--dir", workdir)
    doc = one_document(out)
    assert code == 0 and isinstance(doc, dict)
    assert (doc["call"], doc["attempt"], doc["status"]) == (1, 0, "failed")
    assert doc["stdout"] == "out 1\x1b]0;title\x07\n"  # the value as it is: JSON escapes it
    assert "ValueError: bad" in doc["traceback"]
    assert doc["failure"]["type"] == "builtins.ValueError"


def test_an_empty_work_dir_and_no_sweeps_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "none")
    assert one_document(run(capsys, "status", "--json", "--dir", root)[1]) == {
        "work_dir": root,
        "batches": [],
    }
    assert one_document(run(capsys, "sweep", "status", "--json", "--dir", root)[1]) == {
        "work_dir": root, "sweeps": []
    }  # fmt: skip


def train(config: dict[str, float]) -> float:
    sweep.log(1, loss=config["lr"] * 2)
    return config["lr"]


def test_sweep_status_json(workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    sweep.Sweep(
        train, {"lr": sweep.grid([0.1, 0.3])}, metric="loss", mode="min", name="tiny", progress=False,
        backend="local", directory=workdir,
    ).run()  # fmt: skip
    code, out, _ = run(capsys, "sweep", "status", "--json", "--dir", workdir)
    doc = one_document(out)
    assert code == 0 and isinstance(doc, dict)
    (listed,) = doc["sweeps"]
    assert listed["name"] == "tiny" and listed["counts"]["completed"] == 2
    assert listed["best"] == {"trial": 0, "value": 0.2}
    code, out, _ = run(capsys, "sweep", "status", "tiny", "--json", "--dir", workdir)
    one = one_document(out)
    assert isinstance(one, dict)
    assert [(t["trial"], t["status"], t["config"], t["metrics"]) for t in one["trials"]] == [
        (0, "completed", {"lr": 0.1}, {"loss": 0.2}), (1, "completed", {"lr": 0.3}, {"loss": 0.6})
    ]  # fmt: skip


# -- doctor -------------------------------------------------------------------------------------


def test_doctor_on_the_local_backend_runs_a_test_job(
    workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "doctor", "--backend", "local", "--json", "--dir", workdir)
    doc = one_document(out)
    assert code == 0 and isinstance(doc, dict) and doc["ok"] is True
    checks = {c["check"]: c for c in doc["checks"]}
    assert list(checks) == ["work dir", "backend", "scheduler", "limits", "test job"]
    assert checks["work dir"]["status"] == "WARN"  # not made yet
    assert checks["backend"]["details"] == {"name": "local"}
    job = checks["test job"]
    assert job["status"] == "OK"
    assert (job["details"]["python"], job["details"]["corral"]) == (
        platform.python_version(),
        corral.__version__,
    )
    assert checks["limits"]["details"]["max_array_size"] == 1_000_000
    code, out, _ = run(capsys, "doctor", "--backend", "local", "--no-job", "--dir", workdir)
    assert code == 0
    assert out.splitlines()[0].startswith("OK    work dir   ")  # made by the test job
    assert "mode 0700" in out.splitlines()[0]


def test_doctor_fails_on_a_work_dir_others_can_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o777)
    code, out, _ = run(capsys, "doctor", "--backend", "local", "--dir", str(root))
    assert code == 6
    lines = out.splitlines()
    assert lines[0].startswith("FAIL  work dir   ") and "chmod go-w" in lines[0]
    assert lines[-1] == "FAIL  test job   not submitted: a check above failed"


def test_doctor_refuses_an_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "doctor", "--backend", "pbs")[0] == 2


# Recorded on the test cluster and the SGE cell: `sinfo --version`, `qstat -help` (first
# lines), `sinfo -h -o %P`, `qconf -sql`.
@pytest.mark.parametrize(
    ("stdout", "version"),
    [("slurm-wlm 22.05.8\n", "22.05.8"), ("slurm 23.11.4\n", "23.11.4"),
     ("SGE 8.1.9\nusage: qstat [options]\n", "8.1.9"), ("", None), ("usage: qstat\n", None)],
)  # fmt: skip
def test_parse_version(stdout: str, version: str | None) -> None:
    assert parse_version(stdout) == version


def test_parse_partitions() -> None:
    assert parse_partitions("debug*\nurgent\n") == (["debug", "urgent"], "debug")
    assert parse_partitions("all.q\n") == (["all.q"], None)
    assert parse_partitions("") == ([], None)


def test_every_read_command_takes_json() -> None:
    """`--json` is accepted where the docs say (a usage error would exit 2 before reading)."""
    for argv in (
        ["status"],
        ["status", "x"],
        ["logs", "x", "0"],
        ["sweep", "status"],
        ["attach", "x"],
        ["doctor"],
    ):
        assert main([*argv, "--json", "--help"]) == 0, argv
    assert sys.stdout is not None
