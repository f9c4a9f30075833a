"""The sequential backend: every call runs in this process, in the caller's thread, at
submission, so that a debugger's breakpoints and post-mortem work. Calls still travel
through the work dir, so what works here pickles and works on a cluster too."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ..job import ElementStatus, JobState
from ..resources import Resources
from ..transports.base import Transport
from ..transports.local import LocalTransport
from ..worker.run import run_element
from .base import ArraySpec, Backend, Limits


class SequentialBackend(Backend):
    """Runs each submission to the end inside ``submit``."""

    name = "sequential"
    synchronous = True
    outcome_grace = 0.0  # every call has written its outcome when submit returns

    def __init__(self, transport: Transport | None = None) -> None:
        super().__init__(transport or LocalTransport())
        self._ids = itertools.count(1)
        self._done: dict[str, list[JobState]] = {}

    def render(self, spec: ArraySpec) -> str:
        return f"# corral sequential: submission {spec.sub} runs in the calling process\n"

    def submit_argv(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> list[str]:
        return []

    def submit(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> str:
        job_id = f"S{next(self._ids)}"
        states = []
        for index in range(spec.elements):
            run = run_element(
                spec.batch_dir, spec.sub, index, f"{job_id}_{index}", redirect=False, stdin=spec.command
            )
            states.append(JobState.FAILED if run.exit_code else JobState.COMPLETED)
        self._done[job_id] = states
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, ElementStatus]:
        return {
            f"{job}_{i}": ElementStatus(f"{job}_{i}", state, "localhost")
            for job in job_ids
            for i, state in enumerate(self._done.get(job, []))
        }

    def cancel(self, job_ids: Sequence[str], *, pending_only: bool = False) -> None:
        """Nothing to cancel: every submission has finished when ``submit`` returns."""

    def limits(self, resources: Resources) -> Limits:
        return Limits(max_array_size=1_000_000, max_submit_jobs=None, slots=1)
