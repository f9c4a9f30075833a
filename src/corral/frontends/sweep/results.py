"""What a sweep gives back: its trials (:class:`Trial`) and ways to look at them
(:class:`SweepResult`: ``best()``, ``table()``, ``frame()``, ``plot()``).

A trial's status is one of :data:`STATUSES`. It comes from the trial's call when there is one
(its :class:`~.trial.TrialOutcome`, or its exception: the user's own, or a
:class:`~corral.errors.JobError` naming the job and its state) and otherwise from the trial's
log in the sweep folder (started and not ended: running). Metrics are the last value of each
metric the trial logged, over all its attempts; ``history`` is every logged step.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import FormatError, JobCancelledError
from ...store.sweeps import Metric, SweepFiles, TrialEvent
from ...worker.progress import Stopped
from .schedulers import Mode, check_mode
from .trial import TrialOutcome

#: The states of a trial: waiting for a slot, running, ran to its end, stopped early by the
#: scheduler, raised (or its job failed for good), cancelled, stopped on request.
STATUSES = ("pending", "running", "completed", "pruned", "failed", "cancelled", "stopped")


@dataclass
class Trial:
    """One point of a sweep: its config, how it ended and what it reported."""

    trial: int  #: its id: its index among the sweep's configs, from 0
    config: dict[str, Any]
    status: str = "pending"  #: one of :data:`STATUSES`
    step: float | int | None = None  #: the last step it logged
    metrics: dict[str, Metric] = field(default_factory=dict)  #: the last value of each metric
    attempts: int = 0  #: how many times it started
    value: Any = None  #: what ``train`` returned (completed trials)
    error: BaseException | None = None  #: why it failed (the call's exception)
    milestone: int | None = None  #: where a pruned trial was stopped
    node: str | None = None  #: where its last attempt ran
    failure: str | None = None  #: why it failed, as text ("KeyError: 'x'")
    settled: bool = field(default=False, repr=False)  #: its call's outcome is known
    history: list[TrialEvent] = field(default_factory=list, repr=False)  #: every logged step

    def metric(self, name: str) -> float | None:
        """The last value of metric ``name`` as a number (None if it never logged one)."""
        value = self.metrics.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def add_events(self, events: Sequence[TrialEvent]) -> None:
        """Fold the trial's log lines into what it shows (until its call's outcome settles
        it: the log says how each attempt went, the outcome how the trial ended)."""
        for event in events:
            if event.kind == "start":
                self.attempts += 1
                self.node = event.node
                if not self.settled:
                    self.status = "running"
            elif event.kind == "log":
                self.history.append(event)
                self.step = event.step
                self.metrics.update(event.metrics)
            elif not self.settled and event.status is not None:
                self.status, self.milestone, self.failure = event.status, event.milestone, event.error

    def settle(self, outcome: TrialOutcome | BaseException) -> None:
        """The trial's call ended: with its outcome, or its exception."""
        self.settled = True
        if isinstance(outcome, TrialOutcome):
            self.status, self.value, self.milestone = outcome.status, outcome.value, outcome.milestone
            self.metrics.update(outcome.metrics)  # what its log says too, maybe not read yet
            self.step = outcome.step if outcome.step is not None else self.step
            self.error = self.failure = None
            return
        self.error = outcome
        self.failure = f"{type(outcome).__name__}: {outcome}"
        if isinstance(outcome, Stopped):
            self.status = "stopped"
        elif isinstance(outcome, (JobCancelledError, concurrent.futures.CancelledError)):
            self.status = "cancelled"
        else:
            self.status = "failed"


def better(a: float, b: float, mode: Mode) -> bool:
    """True when ``a`` beats ``b`` (NaN never beats anything)."""
    if math.isnan(a):
        return False
    return math.isnan(b) or (a < b if mode == "min" else a > b)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level: ``{"model": {"lr": 1}}`` -> ``{"model.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = "" if value is None else str(value)
    return text if len(text) <= 24 else text[:23] + "…"


class SweepResult:
    """The trials of a sweep, as it ran (see the module doc for what each field holds)."""

    def __init__(self, name: str, path: str, metric: str, mode: Mode, trials: list[Trial]) -> None:
        self.name = name  #: the sweep's name
        self.path = path  #: its folder (on the host that ran it)
        self.metric = metric
        self.mode = mode
        self.trials = trials  #: every trial, by id

    def __len__(self) -> int:
        return len(self.trials)

    def __repr__(self) -> str:
        return f"<SweepResult {self.name}: {self.summary()}>"

    def counts(self) -> dict[str, int]:
        """How many trials are in each state (every state of :data:`STATUSES`)."""
        found = dict.fromkeys(STATUSES, 0)
        for trial in self.trials:
            found[trial.status] += 1
        return found

    def summary(self) -> str:
        """One line: trials done / running / pruned / failed, and the best so far."""
        c = self.counts()
        done = c["completed"] + c["pruned"] + c["failed"] + c["cancelled"] + c["stopped"]
        return f"{done}/{len(self.trials)} done · {self.standing()}"

    def standing(self) -> str:
        """The summary but the trials done: running / pruned / failed, and the best so far
        (the words beside the sweep's progress bar)."""
        c = self.counts()
        parts = [f"{c['running']} running", f"{c['pruned']} pruned"]
        parts += [f"{c[s]} {s}" for s in ("failed", "cancelled", "stopped") if c[s]]
        best = self._best(self.metric, self.mode, finished_only=False)
        if best is not None:
            parts.append(f"best {self.metric}={_cell(best.metric(self.metric))} (trial {best.trial})")
        return " · ".join(parts)

    def _best(self, metric: str, mode: Mode, *, finished_only: bool) -> Trial | None:
        found: Trial | None = None
        for trial in self.trials:
            value = trial.metric(metric)
            if value is None or (finished_only and trial.status != "completed"):
                continue
            best_value = found.metric(metric) if found is not None else None
            if best_value is None or better(value, best_value, mode):
                found = trial
        return found

    def best(self, metric: str | None = None, mode: Mode | None = None) -> Trial:
        """The trial with the best last value of ``metric`` (default: the sweep's) among the
        trials that ran to their end; among all trials if none did. ValueError when no trial
        logged that metric."""
        metric, mode = metric or self.metric, mode or self.mode
        found = self._best(metric, mode, finished_only=True) or self._best(metric, mode, finished_only=False)
        if found is None:
            raise ValueError(f"no trial of sweep {self.name!r} logged the metric {metric!r}")
        return found

    def rows(self) -> list[dict[str, Any]]:
        """One dict per trial: trial, status, step, attempts, the config (nested keys joined
        with ``.``) and the last metrics."""
        return [
            {"trial": t.trial, "status": t.status, "step": t.step, "attempts": t.attempts,
             **flatten(t.config), **t.metrics}
            for t in self.trials
        ]  # fmt: skip

    def table(self, rows: int | None = None) -> str:
        """The trials as plain text, best first (trials without the metric last); ``rows``
        limits how many are shown. Needs nothing beyond the standard library."""
        ranked = sorted(self.trials, key=self._rank)
        by_id = {row["trial"]: row for row in self.rows()}
        shown = [by_id[t.trial] for t in ranked[:rows]]
        columns: list[str] = []
        for row in shown:
            columns += [key for key in row if key not in columns]
        cells = [[_cell(row.get(col)) for col in columns] for row in shown]
        widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
        lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
        return "\n".join(lines)

    def _rank(self, trial: Trial) -> tuple[int, float]:
        value = trial.metric(self.metric)
        if value is None or math.isnan(value):
            return (1, 0.0)
        return (0, value if self.mode == "min" else -value)

    def frame(self, *, history: bool = False) -> Any:
        """The trials as a pandas DataFrame (pandas is optional: ``pip install pandas``):
        :meth:`rows`, or with ``history`` one row per logged step (trial, attempt, step,
        status and that step's metrics)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "SweepResult.frame() needs pandas: pip install pandas (table() does not)"
            ) from None
        if not history:
            return pd.DataFrame(self.rows())
        return pd.DataFrame(
            [{"trial": t.trial, "attempt": e.attempt, "step": e.step, "status": t.status, **e.metrics}
             for t in self.trials for e in t.history]
        )  # fmt: skip

    def plot(self, metric: str | None = None, path: str | None = None) -> str:
        """Draw ``metric`` (default: the sweep's) against step, one line per trial (pruned ones
        faded, failed ones dashed, the best one bold), save it as a PNG and return its path
        (default ``<sweep name>-<metric>.png`` in the working directory). Needs matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")  # no display needed, and none is touched
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("SweepResult.plot() needs matplotlib: pip install matplotlib") from None
        metric = metric or self.metric
        path = path or os.path.abspath(f"{self.name}-{metric}.png")
        best = self._best(metric, self.mode, finished_only=True)
        figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
        for trial in self.trials:
            points = [
                (e.step, e.metrics[metric])
                for e in trial.history
                if isinstance(e.metrics.get(metric), (int, float))
            ]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            faded = trial.status in ("pruned", "cancelled", "stopped")
            axes.plot(
                steps, values, linestyle="--" if trial.status == "failed" else "-",
                alpha=0.25 if faded else 0.9, linewidth=2.5 if trial is best else 1.0,
            )  # fmt: skip
        axes.set_xlabel("step")
        axes.set_ylabel(metric)
        axes.set_title(f"sweep {self.name}: {self.summary()}", fontsize=9)
        figure.tight_layout()
        figure.savefig(path, format="png")
        plt.close(figure)
        return path


def read_result(files: SweepFiles) -> SweepResult:
    """A sweep as its folder tells it, data only (never a pickle: the trials' return values
    are not there): each trial's status from its log, so a trial whose job died while it
    ran shows as running. For readers that must not unpickle, such as ``corral sweep``."""
    manifest = files.read_manifest()
    configs, metric = manifest.get("configs"), manifest.get("metric")
    if (
        not isinstance(configs, list)
        or not all(isinstance(c, dict) for c in configs)
        or not isinstance(metric, str)
    ):
        raise FormatError(f"{files.manifest_path}: no configs or metric", path=files.manifest_path)
    try:
        mode = check_mode(manifest.get("mode"))
    except ValueError as e:
        raise FormatError(f"{files.manifest_path}: {e}", path=files.manifest_path) from None
    result = SweepResult(files.name, files.path, metric, mode, [Trial(i, c) for i, c in enumerate(configs)])
    for trial, events in files.read_all_events().items():
        if 0 <= trial < len(result.trials):
            result.trials[trial].add_events(events)
    return result
