"""The SLURM backend over a transport that may lose its connection and whose commands run
as another user than this process (a login node over SSH): a lost connection is retried
like a time-out, an sbatch lost in flight is found again rather than submitted twice, and
the user the scheduler sees is asked, not assumed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.backends import base
from corral.backends.base import ArraySpec
from corral.backends.slurm import SlurmBackend
from corral.backends.slurm_text import parse_user
from corral.errors import SchedulerError, SubmissionError
from corral.resources import Resources
from corral.transports.base import CommandResult
from corral.transports.pipe import AgentLost

from .fakes import FakeSlurm

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


class Dropping(FakeSlurm):
    """A FakeSlurm whose connection breaks during the first ``drops`` commands named
    ``name``: after running them (``after``) or before (the command never ran)."""

    def __init__(self, name: str, drops: int = 1, *, after: bool = True) -> None:
        super().__init__(run_jobs=False)
        self.name, self.drops, self.after = name, drops, after

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        if argv[0] != self.name or self.drops == 0:
            return super().run(argv, timeout=timeout)
        self.drops -= 1
        if self.after:
            super().run(argv, timeout=timeout)
        raise AgentLost(f"the session with login broke during run ({argv[0]})", in_flight=self.after)

    def _id(self, argv: list[str]) -> tuple[int, str, str]:
        return 0, (DATA / "id_un.txt").read_text(), ""


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "RETRY_PAUSES", (0.01, 0.01))


def test_a_lost_connection_during_a_query_is_retried_like_a_time_out() -> None:
    fake = Dropping("squeue", drops=2)
    assert SlurmBackend(fake).queued_jobs() == 0
    assert fake.names() == ["squeue", "squeue", "squeue"]


def test_a_connection_lost_for_good_is_a_transient_scheduler_error() -> None:
    fake = Dropping("squeue", drops=10)
    with pytest.raises(SchedulerError, match="broke during run") as caught:
        SlurmBackend(fake).queued_jobs()
    assert caught.value.transient and isinstance(caught.value.__cause__, ConnectionError)


def test_an_sbatch_whose_answer_was_lost_is_found_in_the_queue_not_submitted_again(tmp_path: Path) -> None:
    script = tmp_path / "subs" / "0.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/bash\n#SBATCH --array=0-2\n")
    spec = ArraySpec(str(tmp_path), 0, 3, Resources(), "t", sys.executable, str(tmp_path))
    fake = Dropping("sbatch")
    job = SlurmBackend(fake).submit(spec, str(script), ("o", "e"))
    assert fake.names() == ["sbatch", "squeue"] and fake.scripts == {job: str(script)}
    assert fake.calls[-1] == ["squeue", "-h", "--me", "-o", "%F|%o"]


def test_an_sbatch_lost_before_it_ran_is_a_transient_submission_error(tmp_path: Path) -> None:
    script = tmp_path / "subs" / "0.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/bash\n#SBATCH --array=0-2\n")
    spec = ArraySpec(str(tmp_path), 0, 3, Resources(), "t", sys.executable, str(tmp_path))
    fake = Dropping("sbatch", after=False)
    with pytest.raises(SubmissionError, match="broke during run") as caught:
        SlurmBackend(fake).submit(spec, str(script), ("o", "e"))
    assert caught.value.transient and fake.jobs == {}  # the engine may submit it again


def test_the_user_the_scheduler_sees_is_asked_once_through_the_transport() -> None:
    fake = Dropping("none")
    backend = SlurmBackend(fake)
    assert backend.user() == backend.user() == "corralr"
    assert fake.names() == ["id"]


def test_id_un_prints_one_name() -> None:
    assert parse_user((DATA / "id_un.txt").read_text()) == "corralr"
    for junk in ("", "a b\n"):
        with pytest.raises(SchedulerError, match="not one user name"):
            parse_user(junk)
