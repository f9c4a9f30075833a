"""Running a sweep: :class:`Sweep` (watching it, and :func:`~.watching.attach`: :mod:`.watching`).

A sweep's trials go through the engine as ONE pull batch (see :mod:`corral.engine.planning`):
at most ``max_running`` array elements, each taking the next trial when its last one ends,
pruned or not, with no new submission. The driver only watches: it waits on the trials'
futures and reads the trial logs of the sweep folder (one ``scan`` per look, see
:mod:`corral.store.sweeps`) for the live summary line. Early stopping is decided where the
trials run (:mod:`.trial`), so the trials go on, and prune, while no driver runs.

Running a sweep again under the same ``name`` resumes it: the batches its manifest lists are
attached (finished trials are read, running ones watched), trials those batches left
unfinished (cancelled, lost, or never given their config) are submitted again in a new batch,
and trials no batch holds are submitted. ``overwrite=True`` cancels what still runs and
starts over. A model-based search (:mod:`.optuna`) has its configs chosen here as trials end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from ...engine.futures import CorralFuture
from ...engine.request import Request
from ...engine.submitting import Call
from ...engine.throttle import Throttle
from ...engine.tracking import BatchState
from ...errors import CorralError
from ...store.sweeps import SweepFiles, check_name
from ..executor import Executor
from .optuna import Chooser, Optuna
from .results import SweepResult
from .schedulers import Mode, Scheduler, check_mode
from .search import Grid, Random, Search
from .space import check_space, dimensions, grid, to_json
from .trial import RunTrial, TrialSpec
from .watching import Watch, adopt

logger = logging.getLogger(__name__)


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
    when stderr is a terminal). ``launcher="steps"`` runs the trials as ``srun`` job steps of
    the allocation the script runs in (``sbatch -N4 -n8 script.py``), as many at once as it
    has CPUs, instead of as array jobs. The other keywords are an :class:`~corral.Executor`'s:
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
        launcher: str = "array",
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
        backend = _launcher_backend(launcher, backend)
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
        #: No seed given: a resumed sweep takes the one its first run drew (see _open).
        resolved = search.resolved()  # its seed is fixed now, and saved in the manifest
        self._seed_drawn = resolved is not search
        self.search = resolved
        #: A model-based search chooses the configs while the sweep runs (see .optuna).
        self.lazy = bool(getattr(self.search, "lazy", False))
        count = self.search.count(space, trials)
        self.configs: list[dict[str, Any]] = (
            [{} for _ in range(count)] if self.lazy else self.search.configs(space, trials)
        )
        if "keep" in resources:
            raise TypeError(
                "keep= is not an option of a sweep: it keeps its batches, which a resumed sweep reads"
            )
        self._executor = Executor(
            backend, directory, profile=profile, host=host, max_running=max_running,
            max_retries=max_retries, retry_on=retry_on, keep="all", **resources,
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
        self._say_slots()
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

    def _say_slots(self) -> None:
        """A local sweep runs at most as many trials at once as the machine has CPUs: say so
        when ``max_running`` asks for more (it is an upper bound, not a promise)."""
        backend = self._executor.cluster.backend
        if self.max_running is None or backend.name != "local":
            return
        slots = backend.limits(self._executor.resources).slots
        if slots < self.max_running:
            logger.warning(
                "sweep %s: max_running=%d, but the local backend runs %d trial(s) at once here (the "
                "CPU count over the trial's cpus; CORRAL_LOCAL_SLOTS sets it)",
                self.name, self.max_running, slots,
            )  # fmt: skip

    def _choose(self, watch: Watch) -> None:
        """A model-based search's configs: those chosen before (a resumed sweep), the first
        ones now, and one more as each trial ends (see :mod:`.optuna`)."""
        search = cast(Optuna, self.search)
        ahead = search.ahead or self.max_running or 4
        chooser = Chooser(search, self.space, self.mode, self.files, len(self.configs), ahead)
        trials = watch.result.trials

        def ended(trial: int) -> None:
            done = trials[trial]
            for t, config in chooser.end(trial, done.status, done.metric(self.metric), done.step).items():
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
            if not self.overwrite and self._seed_drawn:
                asked = self._same_seed(found, asked)
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

    def _same_seed(self, found: Mapping[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
        """A sweep run again without a seed resumes with the seed its first run drew (the
        configs come from it), when that run used the same kind of search."""
        before = found.get("search")
        seed = before.get("seed") if isinstance(before, dict) else None
        if not isinstance(seed, int) or before.get("kind") != type(self.search).__name__:  # type: ignore[union-attr]
            return asked
        self.search = dataclasses.replace(self.search, seed=seed)  # type: ignore[type-var]
        if not self.lazy:
            self.configs = self.search.configs(self.space, len(self.configs))
        return self.manifest()

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
            fn=ex.on_node(RunTrial(spec)), calls=calls, resources=ex.resources,
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


def _launcher_backend(launcher: object, backend: Any) -> Any:
    """The backend ``launcher`` asks for: ``"array"`` leaves ``backend`` as given, ``"steps"``
    is the steps backend (trials as ``srun`` job steps of the allocation the driver runs in,
    see :mod:`corral.backends.steps`)."""
    if launcher == "array":
        return backend
    if launcher != "steps":
        raise ValueError(
            f"launcher={launcher!r}: 'array' (array jobs) or 'steps' (job steps of this allocation)"
        )
    if backend not in (None, "steps"):
        raise ValueError(
            f"launcher='steps' runs trials as job steps of this allocation; backend={backend!r} cannot"
        )
    return "steps"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
