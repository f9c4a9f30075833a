"""What a backend hands the worker as data, for the worker names no scheduler: how to have an
element run again after a time-limit warning (:class:`Requeue`), and how to run a call on every
task of a job (:class:`Ranks`). Part of the plan (:mod:`corral.store.protocol`), read back from a
work dir, so every field is checked when one is built; ValueError otherwise."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

JOB_ID = "{job_id}"  # in Requeue.argv: the element's own job id, read from job_id_env
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def _int(value: object, name: str, low: int = 0) -> int:
    """``value`` when it is a whole number (not a bool) of at least ``low``; else ValueError."""
    if type(value) is not int or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, not {value!r}")
    return value


def _bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value


def _env_name(value: object, name: str) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{name} must name an environment variable, not {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class Requeue:
    """How a worker has its element run again after a time-limit warning, as data from the
    backend: either exit with ``exit_code`` (the backend reruns an element that exits so:
    the local backend), or run ``argv`` (never through a shell) with :data:`JOB_ID` replaced
    by the element's own job id from the environment variable ``job_id_env`` (SLURM:
    ``scontrol requeue {job_id}`` with ``SLURM_JOB_ID``). After that command succeeds, the
    scheduler stops the element itself: the worker lets SIGTERM end it again and waits at
    most ``settle`` seconds for that, then ends anyway."""

    exit_code: int | None = None
    argv: tuple[str, ...] = ()
    job_id_env: str = ""
    settle: float = 120.0

    def __post_init__(self) -> None:
        if (self.exit_code is None) == (not self.argv):
            raise ValueError("a Requeue has either an exit_code or an argv, not both nor neither")
        if self.exit_code is not None and not 1 <= _int(self.exit_code, "exit_code") <= 255:
            raise ValueError(f"exit_code must be 1 to 255, not {self.exit_code}")
        if self.argv:
            if not all(isinstance(a, str) and a for a in self.argv):
                raise ValueError(f"argv must hold non-empty strings, not {self.argv!r}")
            if not any(JOB_ID in a for a in self.argv):
                raise ValueError(f"argv must hold {JOB_ID} where the element's job id goes: {self.argv!r}")
            _env_name(self.job_id_env, "job_id_env")
        elif self.job_id_env:
            raise ValueError("job_id_env goes with an argv, not with an exit_code")
        if isinstance(self.settle, bool) or not isinstance(self.settle, (int, float)):
            raise ValueError(f"settle must be a number of seconds, not {self.settle!r}")
        if not 0 <= self.settle <= 3600:
            raise ValueError(f"settle must be 0 to 3600 seconds, not {self.settle}")

    def command(self, job_id: str) -> list[str]:
        """The argv to run for the element whose job id is ``job_id``. Plain replacement, not
        ``str.format``: braces elsewhere in an argument stay as they are."""
        return [a.replace(JOB_ID, job_id) for a in self.argv]

    def to_json(self) -> dict[str, Any]:
        if self.exit_code is not None:
            return {"exit_code": self.exit_code, "settle": self.settle}
        return {"argv": list(self.argv), "job_id_env": self.job_id_env, "settle": self.settle}

    @classmethod
    def from_json(cls, data: object) -> Requeue:
        """The inverse of :meth:`to_json`; ValueError for anything else."""
        if not isinstance(data, dict) or not set(data) <= {"exit_code", "argv", "job_id_env", "settle"}:
            raise ValueError(f"requeue must be an object of exit_code or argv, not {data!r}")
        argv = data.get("argv", [])
        if not isinstance(argv, list):
            raise ValueError(f"requeue argv must be a list, not {argv!r}")
        return cls(
            exit_code=data.get("exit_code"), argv=tuple(argv), job_id_env=data.get("job_id_env", ""),
            settle=data.get("settle", 120.0),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Ranks:
    """How a worker runs each call once per task of its job (``per_task``), as data from the
    backend: ``argv`` (up to and including the interpreter; never through a shell) followed
    by ``-m corral.worker.ranks FOLDER`` starts every task itself (SLURM's ``srun``), or,
    with a ``count``, once per task, started by the worker (the local backend). ``gather``:
    the call's value is the list of every rank's, else rank 0's. ``names``: the environment
    variables in which the launcher tells each task its rank, the number of tasks, its rank
    on its node and the node's name (SLURM's); none when the worker starts the tasks."""

    argv: tuple[str, ...]
    count: int | None = None
    gather: bool = False
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) and a for a in self.argv):
            raise ValueError(f"ranks argv must hold non-empty strings, not {self.argv!r}")
        if self.count is not None:
            _int(self.count, "ranks count", 1)
        _bool(self.gather, "ranks gather")
        if self.names and len(self.names) != 4:
            raise ValueError(f"ranks names must be four variables or none, not {self.names!r}")
        for name in self.names:
            _env_name(name, "ranks names")

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "count": self.count,
            "gather": self.gather,
            "names": list(self.names),
        }

    @classmethod
    def from_json(cls, data: object) -> Ranks:
        """The inverse of :meth:`to_json`; ValueError for anything else."""
        if not isinstance(data, dict) or set(data) != {"argv", "count", "gather", "names"}:
            raise ValueError(f"ranks must be an object of argv, count, gather and names, not {data!r}")
        if not isinstance(data["argv"], list) or not isinstance(data["names"], list):
            raise ValueError(f"ranks argv and names must be lists, not {data!r}")
        return cls(
            argv=tuple(data["argv"]), count=data["count"], gather=data["gather"], names=tuple(data["names"])
        )
