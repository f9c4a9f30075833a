"""Running a sweep: :class:`Sweep` and :func:`attach`.

A sweep's trials go through the engine as ONE pull batch (see :mod:`corral.engine.planning`):
at most ``max_running`` array elements, each taking the next trial when its last one ends,
pruned or not, with no new submission. The driver only watches: it waits on the trials'
futures and reads the trial logs of the sweep folder (one ``scan`` per look, see
:mod:`corral.store.sweeps`) for the live summary line. Early stopping is decided where the
trials run (:mod:`.trial`), so the trials go on, and prune, while no driver runs.

Running a sweep again under the same ``name`` resumes it: the batches its manifest lists are
attached (finished trials are read, running ones watched), trials a batch never ran because
its jobs were cancelled are submitted again in a new batch, and trials no batch holds are
submitted. ``overwrite=True`` cancels what still runs and starts over.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from ...engine.cluster import Cluster
from ...engine.futures import CorralFuture
from ...engine.request import Request
from ...engine.submitting import Call
from ...engine.throttle import Throttle
from ...engine.tracking import BatchState
from ...errors import CorralError, FormatError, JobCancelledError, JobLostError
from ...store.sweeps import SweepFiles, check_name
from ...transports.local import LocalTransport
from ..attach import rebuild, settle
from ..executor import Executor
from .optuna import Chooser, ConfigNotChosen, Optuna
from .results import SweepResult, Trial
from .schedulers import Mode, Scheduler, check_mode
from .space import Grid, Random, Search, check_space, dimensions, grid, to_json
from .trial import RunTrial, TrialOutcome, TrialSpec

logger = logging.getLogger(__name__)

#: How the call of an earlier run ended when a resumed sweep runs its trial again.
UNRUN = (JobCancelledError, JobLostError, concurrent.futures.CancelledError, ConfigNotChosen)

#: Seconds between two looks at the trial logs (and redraws of the summary line).
LOOK = 1.0
#: Without a terminal, the summary goes to the log this often (seconds).
LOG_EVERY = 30.0


class Sweep:
    """Run ``train(config)`` once per config of ``space``, as cluster jobs, stopping hopeless
    trials early.

    ``space`` is a dict of dimensions (:func:`uniform`, :func:`loguniform`, :func:`integer`,
    :func:`choice`, :func:`grid`), constants and nested dicts. ``search`` picks the configs:
    ``Random(seed)`` (``trials`` of them) or ``Grid()`` (every point of the grid dimensions;
    the default when the space has one and ``trials`` is not given). Inside ``train``,
    ``corral.sweep.log(step, **metrics)`` reports; with a ``scheduler`` (:class:`ASHA`,
    :class:`Median`) it raises :class:`Pruned` when the trial should stop.

    ``metric`` and ``mode`` (``"min"`` or ``"max"``) say what is optimised. ``max_running`` is
    the most trials at once (default: as the cluster's slots allow; the CPU count locally).
    ``name`` names the sweep's folder (default: ``train``'s name): running it again resumes
    it, ``overwrite=True`` starts over. ``progress`` shows a summary line on stderr (default:
    when stderr is a terminal). The other keywords are an :class:`~corral.Executor`'s:
    ``backend``, ``directory``, ``profile``, ``host``, ``max_retries``, ``retry_on`` and the
    resources and environment of the jobs. Every argument is checked here, before anything is
    written or submitted.
    """

    def __init__(
        self,
        train: Callable[[dict[str, Any]], Any],
        space: dict[str, Any],
        *,
        metric: str,
        mode: str = "min",
        trials: int | None = None,
        search: Search | None = None,
        scheduler: Scheduler | None = None,
        max_running: int | None = None,
        name: str | None = None,
        overwrite: bool = False,
        progress: bool | None = None,
        backend: Any = None,
        directory: str | None = None,
        profile: str | None = None,
        host: str | None = None,
        max_retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        **resources: Any,
    ) -> None:
        if not callable(train):
            raise TypeError(f"train={train!r} is not callable")
        check_space(space)
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric={metric!r}: name the metric that train logs")
        if scheduler is not None and not (hasattr(scheduler, "milestone") and hasattr(scheduler, "keeps")):
            raise TypeError(f"scheduler={scheduler!r} is not a scheduler (ASHA, Median)")
        self.train = train
        self.space = space
        self.metric = metric
        self.mode: Mode = check_mode(mode)
        self.scheduler = scheduler
        self.name = check_name(name if name is not None else getattr(train, "__name__", "sweep"))
        self.overwrite = overwrite
        self.progress = progress
        if search is None:
            has_grid = any(isinstance(d, grid) for _, d in dimensions(space))
            search = Grid() if has_grid and trials is None else Random()
        self.search = search.resolved()  # its seed is fixed now, and saved in the manifest
        #: A model-based search chooses the configs while the sweep runs (see .optuna).
        self.lazy = bool(getattr(self.search, "lazy", False))
        count = self.search.count(space, trials)
        self.configs: list[dict[str, Any]] = (
            [{} for _ in range(count)] if self.lazy else self.search.configs(space, trials)
        )
        self._executor = Executor(
            backend, directory, profile=profile, host=host, max_running=max_running,
            max_retries=max_retries, retry_on=retry_on, **resources,
        )  # fmt: skip
        self.max_running = self._executor.max_running
        self._throttle = Throttle(self.max_running) if self.max_running is not None else None
        cluster = self._executor.cluster
        self.files = SweepFiles(cluster.root, self.name, cluster.backend.transport)
        self._batches: list[BatchState] = []
        self._manifest: dict[str, Any] = {}

    @property
    def path(self) -> str:
        """The sweep's folder (on the host that runs its trials)."""
        return self.files.path

    def manifest(self) -> dict[str, Any]:
        """What the manifest says of this sweep's question (the batches come as they are made)."""
        return {
            "name": self.name, "metric": self.metric, "mode": self.mode,
            "scheduler": self.scheduler.describe() if self.scheduler is not None else None,
            "search": {"kind": type(self.search).__name__, "seed": getattr(self.search, "seed", None)},
            "trials": len(self.configs), "configs": None if self.lazy else [to_json(c) for c in self.configs],
        }  # fmt: skip

    def run(self) -> SweepResult:
        """Run (or resume) the sweep and return its result once every trial has ended. If
        every trial failed, the first one's exception is raised (a bug in ``train``, most
        likely); otherwise failed trials are in the result, each with its error. Ctrl-C
        cancels the sweep's jobs; running it again resumes it."""
        resumed = self._open()
        watch = Watch(self.files, self.name, self.metric, self.mode, self.configs, self.progress)
        for entry in resumed:
            watch.add(self._attach(entry["batch"]), entry["trials"], earlier=True)
        watch.look()
        if self.lazy:
            self._choose(watch)
        todo = [t for t in range(len(self.configs)) if t not in watch.trial_futures]
        try:
            if todo:
                watch.add(self._submit(todo), todo)
            watch.wait(self._submit_again if resumed else None)
        except BaseException:
            self._executor.cluster.cancel_batches(self._batches)
            watch.close()
            raise
        return watch.finish()

    def _choose(self, watch: Watch) -> None:
        """A model-based search's configs: those chosen before (a resumed sweep), the first
        ones now, and one more as each trial ends (see :mod:`.optuna`)."""
        search = cast(Optuna, self.search)
        ahead = search.ahead or self.max_running or 4
        chooser = Chooser(search, self.space, self.mode, self.files, len(self.configs), ahead)
        trials = watch.result.trials

        def ended(trial: int) -> None:
            for t, config in chooser.end(
                trial, trials[trial].status, trials[trial].metric(self.metric)
            ).items():
                trials[t].config = config

        for trial, values in chooser.chosen.items():
            trials[trial].config = chooser.config(values)
        for trial, config in chooser.top_up().items():
            trials[trial].config = config
        watch.on_settle = ended

    def _open(self) -> list[dict[str, Any]]:
        """Create the sweep's folder, or open the one a run of the same name left (its
        batches, to resume); ``overwrite`` removes it first, cancelling its live jobs."""
        asked = self.manifest()
        if self.files.exists():
            found = self.files.read_manifest()
            if self.overwrite:
                cluster = self._executor.cluster
                cluster.cancel_batches([adopt(cluster, e["batch"]) for e in found.get("batches", [])])
                self.files.remove()
            else:
                self._check_same(found, asked)
                self._manifest = found
                return list(found.get("batches", []))
        self.files.create()
        self._manifest = {**asked, "created": time.time(), "batches": []}
        self.files.write_manifest(self._manifest)
        return []

    def _check_same(self, found: Mapping[str, Any], asked: Mapping[str, Any]) -> None:
        for key in ("metric", "mode", "scheduler", "trials", "configs"):
            if found.get(key) != asked[key]:
                raise CorralError(
                    f"sweep {self.name!r} in {self.path} differs in its {key}: {_short(found.get(key))} "
                    f"then, {_short(asked[key])} now. To resume it, ask the same; to start over, "
                    "overwrite=True; or give this one another name="
                )

    def _submit(self, trials: list[int]) -> list[CorralFuture]:
        """Submit ``trials`` as one batch; the manifest lists it before this returns."""
        ex = self._executor
        spec = TrialSpec(
            self.path, self.train, self.metric, self.mode, self.scheduler,
            space=self.space if self.lazy else None, wait=getattr(self.search, "wait", 0.0),
        )  # fmt: skip
        calls: list[Call] = [((t, None if self.lazy else self.configs[t]), {}) for t in trials]
        request = Request(
            fn=RunTrial(spec), calls=calls, resources=ex.resources,
            max_running=self.max_running, throttle=self._throttle, retry=ex.retry, budget=ex.submit_budget,
            what="sweep", name=f"sweep-{self.name}", environment=ex.environment,
        )  # fmt: skip
        batch = ex.cluster.submit(request)
        self._batches.append(batch)
        self._manifest["batches"].append({"batch": batch.store.path, "trials": list(trials)})
        self.files.write_manifest(self._manifest)
        return list(batch.futures)

    def _submit_again(self, trials: list[int]) -> list[CorralFuture]:
        logger.info(
            "sweep %s: %d trials its earlier run never ran are submitted again", self.name, len(trials)
        )
        return self._submit(trials)

    def _attach(self, path: str) -> list[CorralFuture]:
        batch = adopt(self._executor.cluster, path)
        self._batches.append(batch)
        return list(batch.futures)


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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        self.display = Display(progress)

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
        self.display.show(self.result.summary())

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
            if time.monotonic() - last >= LOOK:
                self.look()
                last = time.monotonic()

    def close(self) -> None:
        self.display.close(self.result.summary())

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
    """The live summary line: redrawn in place on a terminal, else logged now and then."""

    def __init__(self, progress: bool | None) -> None:
        self.tty = sys.stderr.isatty() if progress is None else progress
        self._logged = 0.0
        self._shown = False

    def show(self, line: str) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
            self._shown = True
        elif time.monotonic() - self._logged >= LOG_EVERY:
            self._logged = time.monotonic()
            logger.info("%s", line)

    def close(self, line: str) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line + "\n")
            sys.stderr.flush()
        else:
            logger.info("%s", line)
