"""A trial on the node: the call each trial runs as (:class:`RunTrial`) and
``corral.sweep.log``, which records a step's metrics and applies early stopping there.

Nothing here needs the driver alive. :func:`log`:

1. hands the step and metrics to :func:`corral.progress` (the driver's live view; raises
   :class:`corral.Stopped` when someone asked the call to stop);
2. appends them to the trial's log in the sweep folder (``trials/<trial>.log``, every
   attempt: a retried trial keeps what it reported before);
3. when the sweep has a scheduler and the metric is among them, reports at the milestone
   the step reached (if any) through a rung record created exclusively in the sweep's
   folder (:mod:`corral.store.rungs`), and raises :class:`Pruned` if the record says stop.
   A record is made once per trial and milestone: a requeued or retried attempt that
   reports there again gets the first decision.

A trial whose function raises :class:`Pruned` (from :func:`log`, or its own) ends PRUNED;
any other exception is the trial's failure, sent back as the call's exception.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ...store.rungs import RungRecord, Rungs
from ...store.sweeps import TrialEvent, TrialLog, rungs_folder, wait_for_config
from ...trust import check_private_dir
from ...worker.progress import Stopped, progress, running_call
from .optuna import ConfigNotChosen, config_of
from .schedulers import Mode, Scheduler


class Pruned(Exception):
    """This trial was stopped early by the sweep's scheduler (raised by :func:`log`). Let it
    propagate: the trial ends PRUNED, not failed. A trial may also raise it itself."""

    def __init__(
        self, message: str = "pruned", *, milestone: int | None = None, value: float | None = None,
        cutoff: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.milestone = milestone  #: the step where the decision was made
        self.value = value  #: the trial's metric there
        self.cutoff = cutoff  #: what it had to reach


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a sweep shares (sent with the batch's function)."""

    folder: str  #: the sweep's folder, as the nodes see it
    train: Callable[[dict[str, Any]], Any]
    metric: str
    mode: Mode
    scheduler: Scheduler | None
    #: A model-based search's: the space its chosen values fill, and how long a trial waits
    #: for them (see :mod:`.optuna`); None when every call carries its config.
    space: dict[str, Any] | None = None
    wait: float = 0.0


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial's call returns: how it ended and what ``train`` returned."""

    trial: int
    status: Literal["completed", "pruned"]
    value: Any = None  #: ``train``'s return value (completed trials)
    milestone: int | None = None  #: where a pruned trial was stopped
    step: float | int | None = None  #: the last step it logged
    metrics: dict[str, Any] = field(default_factory=dict)  #: the last value of each metric


@dataclass
class _Active:
    """The trial running in this context."""

    spec: TrialSpec
    trial: int
    attempt: int
    log: TrialLog
    rungs: Rungs | None
    reported: set[int] = field(default_factory=set)
    pruned: Pruned | None = None
    step: float | int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


_active: contextvars.ContextVar[_Active | None] = contextvars.ContextVar("corral_trial", default=None)


def current_trial() -> int | None:
    """The id of the trial running in this context (an index from 0); None outside one."""
    active = _active.get()
    return None if active is None else active.trial


def log(step: float, **metrics: object) -> None:
    """Record the trial's metrics at ``step`` (an epoch, an iteration: a number that grows).

    Raises :class:`Pruned` when the sweep's scheduler stops the trial here: at a milestone
    step, if the sweep's metric is among ``metrics`` and worse than the scheduler allows.
    Metric values are int, float, str, bool or None (TypeError otherwise); the sweep's metric
    must be a number. Outside a trial it only calls :func:`corral.progress`, so ``train``
    runs the same as a plain function."""
    active = _active.get()
    # A diverged run's NaN is for the scheduler to judge (it prunes it), not an error: the
    # progress record, which holds finite numbers only, gets None in its place.
    shown = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    progress(step, None, **shown)  # checks every value, and raises Stopped when asked
    if active is None:
        return
    if active.pruned is not None:  # the trial went on after it was told to stop
        raise active.pruned
    active.log.write(TrialEvent(active.trial, active.attempt, "log", time.time(), step=step, metrics=metrics))  # type: ignore[arg-type]
    active.step = step
    active.metrics.update(metrics)
    spec = active.spec
    if spec.scheduler is None or active.rungs is None or spec.metric not in metrics:
        return
    value = metrics[spec.metric]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"the sweep's metric {spec.metric!r} must be a number, not {type(value).__name__}")
    milestone = spec.scheduler.milestone(step, active.reported)
    if milestone is None:
        return
    record = _report(active, spec.scheduler, milestone, value)
    active.reported.add(milestone)
    if not record.keep:
        active.pruned = Pruned(
            f"trial {active.trial} pruned at step {milestone}: {spec.metric}={record.value!r}, worse "
            f"than the cutoff {record.cutoff!r} that the {record.earlier} values there before it set",
            milestone=milestone, value=record.value, cutoff=record.cutoff,
        )  # fmt: skip
        raise active.pruned


def _report(active: _Active, scheduler: Scheduler, milestone: int, value: float | None) -> RungRecord:
    assert active.rungs is not None
    mode = active.spec.mode

    def decide(earlier: list[float | None]) -> tuple[bool, float | None]:
        return scheduler.keeps(value, earlier, mode, milestone)

    return active.rungs.report(active.trial, active.attempt, milestone, value, decide)


class RunTrial:
    """The function of a sweep's batch: ``RunTrial(spec)(trial, config)`` runs one trial.
    The rung records it reads are kept while the element runs (they never change), so each
    report reads only the records it has not seen."""

    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec
        self._rungs: Rungs | None = None
        self._checked = False

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])  # type: ignore[misc]

    def __call__(self, trial: int, config: dict[str, Any] | None) -> TrialOutcome:
        spec = self.spec
        if config is None:  # a model-based search: the driver chooses it while the sweep runs
            config = self._chosen(trial)
        if not self._checked:  # the folder the records come from must be the user's alone
            check_private_dir(spec.folder)
            self._checked = True
        if spec.scheduler is not None and self._rungs is None:
            self._rungs = Rungs(rungs_folder(spec.folder))
        attempt = (running_call() or (trial, 0))[1]
        trial_log = TrialLog(spec.folder, trial)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        trial_log.write(TrialEvent(trial, attempt, "start", time.time(), node=node))
        active = _Active(spec, trial, attempt, trial_log, self._rungs)
        token = _active.set(active)
        try:
            value = spec.train(config)
        except Pruned as e:
            outcome = TrialOutcome(
                trial, "pruned", milestone=(active.pruned or e).milestone, step=active.step
            )
        except BaseException as e:
            status = "stopped" if isinstance(e, Stopped) else "failed"
            self._end(active, status, error=f"{type(e).__name__}: {e}"[:2000])
            raise
        else:
            if active.pruned is not None:  # Pruned was caught inside train, which then returned
                outcome = TrialOutcome(trial, "pruned", milestone=active.pruned.milestone, step=active.step)
            else:
                outcome = TrialOutcome(trial, "completed", value=value, step=active.step)
        finally:
            _active.reset(token)
        self._end(active, outcome.status, milestone=outcome.milestone)
        return dataclasses.replace(outcome, metrics=dict(active.metrics))

    def _chosen(self, trial: int) -> dict[str, Any]:
        spec = self.spec
        assert spec.space is not None, "a call without its config, in a sweep that lists them"
        values = wait_for_config(spec.folder, trial, spec.wait)
        if values is None:
            raise ConfigNotChosen(
                f"trial {trial} waited {spec.wait:g} s for its config, which the sweep's driver "
                "chooses (an Optuna search): no driver ran. Run the sweep again to resume it."
            )
        return config_of(spec.space, values)

    @staticmethod
    def _end(active: _Active, status: str, *, milestone: int | None = None, error: str | None = None) -> None:
        event = TrialEvent(
            active.trial, active.attempt, "end", time.time(), status=status, milestone=milestone, error=error
        )
        try:
            active.log.write(event)
        finally:
            active.log.close()
