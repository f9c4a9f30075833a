"""Watching a sweep's trials: :class:`Watch` (their futures, their logs, the summary line),
and :func:`attach`, which watches a sweep again from any process.

The driver (:mod:`.driver`) submits; this module only waits and reads: the trials' futures,
and the trial logs of the sweep folder, one ``scan`` per look (see :mod:`corral.store.sweeps`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...engine.cluster import Cluster
from ...engine.futures import CorralFuture
from ...engine.ledger_values import Counts
from ...engine.tracking import BatchState
from ...errors import CorralError, FormatError, JobCancelledError, JobLostError
from ...store.sweeps import SweepFiles, check_name
from ...transports.local import LocalTransport
from ..attach import rebuild, settle
from ..executor import Executor
from ..progress_bar import ProgressBar, wanted
from .optuna import ConfigNotChosen
from .results import SweepResult, Trial
from .schedulers import Mode, check_mode
from .trial import TrialOutcome

logger = logging.getLogger(__name__)

#: How the call of an earlier run ended when a resumed sweep runs its trial again.
UNRUN = (JobCancelledError, JobLostError, concurrent.futures.CancelledError, ConfigNotChosen)

#: Seconds between two looks at the trial logs (and redraws of the summary line).
LOOK = 1.0
#: Without a terminal, the summary goes to the log this often (seconds).
LOG_EVERY = 30.0


def adopt(cluster: Cluster, path: str) -> BatchState:
    """Watch the batch in ``path`` (a sweep's, on ``cluster``'s host) again: its finished
    calls are read now, its live jobs watched (see :mod:`corral.frontends.attach`)."""
    transport = cluster.backend.transport
    remote = not isinstance(transport, LocalTransport)
    if remote:
        transport.makedirs(path)  # checks that it is the user's alone, on its host
    return cluster.adopt(rebuild(cluster, path, checked=remote), settle)


def attach(
    name: str,
    *,
    directory: str | None = None,
    host: str | None = None,
    profile: str | None = None,
    backend: Any = None,
    progress: bool | None = None,
) -> SweepResult:
    """Watch sweep ``name`` to its end from any process (its driver was killed, or ran
    elsewhere): the batches its manifest lists are attached, finished trials read, live
    ones watched, and its result returned as :meth:`Sweep.run` would. It submits nothing new
    (a call lost with its job is still retried as the batch's retry policy says); running
    the sweep again under its name also resubmits trials whose jobs were cancelled."""
    cluster = Executor(backend, directory, profile=profile, host=host).cluster
    files = SweepFiles(cluster.root, check_name(name), cluster.backend.transport)
    if not files.exists():
        raise CorralError(f"no sweep {name!r} in {cluster.root}: its folder {files.path} holds no sweep.json")
    manifest = files.read_manifest()
    configs = manifest.get("configs")
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise FormatError(
            f"{files.manifest_path}: its configs are not a list of dicts", path=files.manifest_path
        )
    watch = Watch(
        files, name, str(manifest.get("metric")), check_mode(manifest.get("mode")), configs, progress
    )
    for entry in manifest.get("batches", []):
        watch.add(list(adopt(cluster, entry["batch"]).futures), entry["trials"])
    watch.wait(None)
    return watch.finish()


class Watch:
    """Waits for a sweep's trials and keeps their view: futures, log events, the summary."""

    def __init__(
        self, files: SweepFiles, name: str, metric: str, mode: Mode, configs: Sequence[dict[str, Any]],
        progress: bool | None,
    ) -> None:  # fmt: skip
        self.files = files
        self.result = SweepResult(
            name, files.path, metric, mode, [Trial(i, c) for i, c in enumerate(configs)]
        )
        self.trial_futures: dict[int, CorralFuture] = {}
        self._trial_of: dict[concurrent.futures.Future[Any], int] = {}
        self._earlier: set[concurrent.futures.Future[Any]] = set()
        #: Told each trial whose call ended (a model-based search chooses the next config).
        self.on_settle: Callable[[int], None] | None = None
        self.display = Display(self.result, progress)

    def add(self, futures: Sequence[CorralFuture], trials: Sequence[int], *, earlier: bool = False) -> None:
        """Watch ``futures``, the calls of ``trials``; ``earlier``: of a batch an earlier run
        of the sweep submitted (attached, to resume it)."""
        for future, trial in zip(futures, trials, strict=True):
            self.trial_futures[trial] = future
            self._trial_of[future] = trial
        if earlier:
            self._earlier.update(futures)

    def look(self) -> None:
        """Read what the trials logged since the last look, and redraw the summary."""
        for trial, events in self.files.read_events().items():
            if 0 <= trial < len(self.result.trials):
                self.result.trials[trial].add_events(events)
        self.display.show()

    def wait(self, again: Callable[[list[int]], list[CorralFuture]] | None) -> None:
        """Until every trial's future is done. ``again`` runs the trials that an earlier run
        left unfinished (their calls cancelled, or lost) once more."""
        pending: set[concurrent.futures.Future[Any]] = set(self.trial_futures.values())
        last = time.monotonic()
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=LOOK, return_when="FIRST_COMPLETED")
            rerun = []
            for future in done:
                outcome = _outcome(future, self._trial_of[future])
                if again is not None and future in self._earlier and isinstance(outcome, UNRUN):
                    rerun.append(self._trial_of[future])
                else:
                    self.result.trials[self._trial_of[future]].settle(outcome)
                    if self.on_settle is not None:
                        self.on_settle(self._trial_of[future])
            if rerun and again is not None:
                futures = again(sorted(rerun))
                self.add(futures, sorted(rerun))
                pending.update(futures)
            if time.monotonic() - last >= self.display.every:  # the logs are read for the view only
                self.look()
                last = time.monotonic()

    def close(self) -> None:
        self.display.close()

    def finish(self) -> SweepResult:
        """The result, once every trial ended: the last log lines read, failures told."""
        self.look()
        self.close()
        failed = [t for t in self.result.trials if t.status == "failed"]
        for one in failed[:3]:
            logger.warning("sweep %s: trial %d failed: %r", self.result.name, one.trial, one.error)
        if len(failed) > 3:
            logger.warning(
                "sweep %s: %d more trials failed (see result.trials)", self.result.name, len(failed) - 3
            )
        if failed and len(failed) == len(self.result.trials) and failed[0].error is not None:
            raise failed[0].error
        return self.result


def _outcome(future: concurrent.futures.Future[Any], trial: int) -> TrialOutcome | BaseException:
    """How a trial's call ended: its outcome, or its exception."""
    if future.cancelled():
        return concurrent.futures.CancelledError(f"trial {trial} was cancelled before it started")
    error = future.exception()
    return error if error is not None else future.result()


class Display:
    """The sweep's progress bar (see :mod:`corral.frontends.progress_bar`): trials ended,
    with the running, pruned and failed ones and the best so far beside it; on a terminal,
    else in the log now and then."""

    def __init__(self, result: SweepResult, progress: bool | None) -> None:
        self.result = result
        self.bar = ProgressBar(
            f"sweep {result.name}", len(result.trials), self._counts, progress,
            text=lambda _: result.standing(), unit="trials",
        )  # fmt: skip
        #: Seconds between two looks at the trials' logs while they run: they feed the bar.
        self.every = LOOK if wanted(progress) else LOG_EVERY

    def _counts(self) -> Counts:
        c = self.result.counts()
        retried = sum(max(t.attempts - 1, 0) for t in self.result.trials)
        done = c["completed"] + c["pruned"] + c["stopped"]
        return Counts(c["pending"], c["running"], done, c["failed"], c["cancelled"], retried)

    def show(self) -> None:
        self.bar.refresh(now=self.bar.drawn)

    def close(self) -> None:
        self.bar.close()
