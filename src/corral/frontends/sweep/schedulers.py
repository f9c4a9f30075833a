"""Early-stopping rules of a sweep: pure decisions, no I/O.

A trial reports ``sweep.log(step=..., metric=...)``; on the node where it runs, the sweep asks
its scheduler two questions, and keeps the answers in rung records (:mod:`corral.store.rungs`)::

    step, milestones already reported ──milestone()──▶ the milestone to report at, or None
    own value, earlier values, mode   ──keeps()─────▶ (continue?, the cutoff compared with)

"Earlier values" are those recorded at that milestone by other trials *before* this trial's
record was made: the decision is asynchronous (Ray Tune's "stopping" ASHA), never waits for
company, and is made once per (trial, milestone), whatever happens after.

* :class:`Scheduler`  the protocol both rules follow (``milestone``, ``keeps``, ``describe``)
* :class:`ASHA`       Li et al. 2018, asynchronous successive halving: milestones
                      min_t·eta^k, then max_t; continue iff in the top 1/eta of the trials
                      there, itself counted (the rank rule of Optuna's SuccessiveHalvingPruner)
* :class:`Median`     like Optuna's MedianPruner: a milestone every ``interval`` steps after
                      ``warmup``; continue iff at least as good as the earlier median
* :func:`quantile`    numpy's default ``percentile`` (linear interpolation), with an exact
                      rank: the median rule's
* :data:`Mode`, :func:`check_mode`   "max" (higher is better) or "min"

NaN and None are "no number": ignored among earlier values, and worse than anything as a
trial's own value (pruned whenever there is a cutoff to compare with).
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Protocol, runtime_checkable

#: "max": higher values are better (accuracy); "min": lower are better (loss).
Mode = Literal["min", "max"]


def check_mode(mode: object) -> Mode:
    """``mode`` itself when it is "min" or "max"; ValueError otherwise."""
    if mode == "min" and isinstance(mode, str):
        return "min"
    if mode == "max" and isinstance(mode, str):
        return "max"
    raise ValueError(f'a sweep\'s mode must be "min" or "max", not {mode!r}')


def quantile(values: Sequence[float], q: float | Fraction) -> float:
    """The ``q`` quantile (0 <= q <= 1) of ``values`` by linear interpolation between the two
    nearest ranks: what ``numpy.percentile(values, 100 * q)`` returns, up to rounding, and
    an infinity where numpy mixes infinities into NaN. ValueError for no values or a NaN among them.

    Give ``q`` as a :class:`~fractions.Fraction` to make the rank exact: the 2/3 quantile of
    1..10 is then 7, where a float 2/3 gives 7.000000000000001, which would
    prune a trial tied with the 7th value."""
    if not values:
        raise ValueError("the quantile of no values")
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile must be between 0 and 1, not {q!r}")
    ordered = sorted(float(v) for v in values)
    if any(math.isnan(v) for v in ordered):
        raise ValueError("the quantile of values holding NaN (leave them out first)")
    rank = (len(ordered) - 1) * Fraction(q)
    low = math.floor(rank)
    frac = float(rank - low)
    a = ordered[low]
    if frac == 0 or a == ordered[low + 1]:
        return a
    b = ordered[low + 1]
    if math.isinf(a) and math.isinf(b):  # -inf and inf: nothing lies between, take the nearer end
        return a if frac < 0.5 else b
    if math.isinf(a) or math.isinf(b):  # any weight on an infinity gives it (numpy says NaN)
        return a if math.isinf(a) else b
    # numpy's _lerp: from the nearer end, so that q and 1 - q mirror and no rounding overshoots b
    return a + (b - a) * frac if frac < 0.5 else b - (b - a) * (1 - frac)


@runtime_checkable
class Scheduler(Protocol):
    """An early-stopping rule, asked on the node by each trial; see the module doc."""

    def milestone(self, step: float, reported: Collection[int]) -> int | None:
        """The milestone ``step`` reports at: the highest milestone <= step, unless it is in
        ``reported`` (the trial has reported there already, or jumped past it earlier); None
        when there is nothing to report. A trial that jumps from step 2 to step 10 reports at
        9 only, never at 3."""
        ...

    def keeps(
        self, value: float | None, earlier: Sequence[float | None], mode: Mode, milestone: int
    ) -> tuple[bool, float | None]:
        """Whether a trial whose metric is ``value`` at ``milestone`` continues, given the
        values recorded there before it (``earlier``); and the cutoff it was compared with,
        None when it was compared with nothing."""
        ...

    def describe(self) -> dict[str, object]:
        """The rule and its settings, as JSON-able data (for the sweep's records and tables)."""
        ...


@dataclass(frozen=True)
class ASHA:
    """Asynchronous successive halving (Li et al. 2018), decided as each trial reports (the
    "stopping" form Ray Tune runs), with successive halving's rank rule.

    Milestones are ``min_t * eta**k`` while below ``max_t``, then ``max_t`` itself: ASHA(1, 81, 3)
    has 1, 3, 9, 27, 81 and ASHA(1, 100, 3) has 1, 3, 9, 27, 81, 100. At each milestone a trial
    is ranked among the ``n`` values there: the numbers recorded before its own record, and its
    own. It continues iff fewer than ``max(1, n // eta)`` of the earlier values are strictly
    better than its own (higher in mode "max", lower in mode "min"); ties go to the trial. With
    eta=3: alongside 1 or 2 earlier values it must be at least as good as all of them; alongside
    5 (n=6) one may be better; alongside 8 (n=9), two. The cutoff it is given is the value it
    had to match: the ``max(1, n // eta)``-th best of the n values, its own counted.

    Why this rule: it is the paper's, which promotes the top 1/eta of a rung, and that of
    Optuna's SuccessiveHalvingPruner. Ray Tune's rule, at least as good as the (1 - 1/eta)
    quantile of the earlier values interpolated, keeps too many while they are few (second of
    three continues: the 2/3 quantile of two values lies between them); on the same curves it
    spent 1.5 times the epochs of Optuna's pruner for the same best value.

    * No company: a trial that reaches a milestone first (no earlier numbers) continues,
      cutoff None; early trials are never pruned for being early (``max(1, ...)`` then lets
      the next ones through only if they are the best so far).
    * At ``max_t`` nothing is pruned: the trial has spent its budget. Its record is still
      written, so later trials (and tables) see it.
    * NaN or None: ignored among the earlier values (not counted in n); as the trial's own
      value it is worse than any number (pruned when there are earlier numbers, continues
      when there are none).
    """

    min_t: int = 1
    max_t: int = 100
    eta: int = 3
    #: The milestones, ascending; computed from the three settings.
    milestones: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _whole(self.min_t, "ASHA's min_t", 1)
        _whole(self.max_t, "ASHA's max_t", self.min_t + 1, f"above min_t ({self.min_t})")
        _whole(self.eta, "ASHA's eta", 2)
        rungs = []
        rung = self.min_t
        while rung < self.max_t:
            rungs.append(rung)
            rung *= self.eta
        object.__setattr__(self, "milestones", (*rungs, self.max_t))

    def milestone(self, step: float, reported: Collection[int]) -> int | None:
        """See :meth:`Scheduler.milestone`."""
        at = _finite(step)
        reached = [m for m in self.milestones if m <= at]
        if not reached or reached[-1] in reported:
            return None
        return reached[-1]

    def keeps(
        self, value: float | None, earlier: Sequence[float | None], mode: Mode, milestone: int
    ) -> tuple[bool, float | None]:
        """See :meth:`Scheduler.keeps` and the class doc."""
        mode = check_mode(mode)
        if milestone not in self.milestones:
            raise ValueError(f"{milestone!r} is not a milestone of {self} (they are {self.milestones})")
        known = _numbers(earlier)
        if not known or milestone == self.max_t:
            return True, None
        allowed = max(1, (len(known) + 1) // self.eta)  # how many of the n may be better than it
        ranked = sorted(known)  # ascending: bisect, not a loop, as trials reach the thousands
        if value is None or math.isnan(value):  # worse than any number: the allowed-th best is earlier
            return False, _nth_best(ranked, allowed, mode)
        if mode == "max":
            better = len(ranked) - bisect.bisect_right(ranked, value)
        else:
            better = bisect.bisect_left(ranked, value)
        # The value it had to match, the allowed-th best of the n: it continues iff it is at least
        # as good as this, the same decision told as a number (for records and messages).
        bisect.insort(ranked, value)
        return better < allowed, _nth_best(ranked, allowed, mode)

    def describe(self) -> dict[str, object]:
        """``{"scheduler": "asha", "min_t": ..., "max_t": ..., "eta": ...}``."""
        return {"scheduler": "asha", "min_t": self.min_t, "max_t": self.max_t, "eta": self.eta}


@dataclass(frozen=True)
class Median:
    """Median stopping, like Optuna's MedianPruner.

    Milestones are every ``interval`` steps strictly after ``warmup`` steps: ``warmup +
    k * interval`` for k >= 1, without end (Median(warmup=10, interval=5): 15, 20, 25, ...).
    At each milestone a trial continues while fewer than ``min_trials`` earlier numbers were
    recorded there; after that, iff it is at least as good as their median (>= in mode
    "max", <= in mode "min"; ties continue).

    Differences from Optuna: the value compared is the one the trial reports at that step
    (not its best so far), the company is the trials recorded earlier at the milestone (not
    the completed trials), and a NaN or None value continues while there is too little
    company (Optuna prunes it at once); with enough company it is pruned.
    """

    warmup: int = 0
    interval: int = 1
    min_trials: int = 5

    def __post_init__(self) -> None:
        _whole(self.warmup, "Median's warmup", 0)
        _whole(self.interval, "Median's interval", 1)
        _whole(self.min_trials, "Median's min_trials", 1)

    def milestone(self, step: float, reported: Collection[int]) -> int | None:
        """See :meth:`Scheduler.milestone`."""
        k = (math.floor(_finite(step)) - self.warmup) // self.interval
        if k < 1:
            return None
        top = self.warmup + k * self.interval
        return None if top in reported else top

    def keeps(
        self, value: float | None, earlier: Sequence[float | None], mode: Mode, milestone: int
    ) -> tuple[bool, float | None]:
        """See :meth:`Scheduler.keeps` and the class doc."""
        mode = check_mode(mode)
        if isinstance(milestone, bool) or not isinstance(milestone, int) or not self._at(milestone):
            raise ValueError(f"{milestone!r} is not a milestone of {self}")
        known = _numbers(earlier)
        if len(known) < self.min_trials:
            return True, None
        cutoff = quantile(known, Fraction(1, 2))  # exact, so that ties are ties (see quantile)
        if value is None or math.isnan(value):
            return False, cutoff
        return (value >= cutoff if mode == "max" else value <= cutoff), cutoff

    def _at(self, milestone: int) -> bool:
        k, rest = divmod(milestone - self.warmup, self.interval)
        return k >= 1 and rest == 0

    def describe(self) -> dict[str, object]:
        """``{"scheduler": "median", "warmup": ..., "interval": ..., "min_trials": ...}``."""
        return {
            "scheduler": "median", "warmup": self.warmup, "interval": self.interval,
            "min_trials": self.min_trials,
        }  # fmt: skip


def _nth_best(ascending: list[float], nth: int, mode: Mode) -> float:
    """The ``nth`` best (1 the best) of the numbers ``ascending``, in ``mode``."""
    return ascending[-nth] if mode == "max" else ascending[nth - 1]


def _numbers(values: Sequence[float | None]) -> list[float]:
    """The numbers among ``values``: None and NaN left out."""
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def _finite(step: float) -> float:
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step):
        raise ValueError(f"a sweep's step must be a finite number, not {step!r}")
    return float(step)


def _whole(value: object, name: str, least: int, says: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number {says or f'>= {least}'}, not {value!r}")


__all__ = ["ASHA", "Median", "Mode", "Scheduler", "check_mode", "quantile"]
