"""How a batch of calls becomes array submissions: the packing decision, as pure functions.

Two modes:

* STATIC (the caller gave ``chunksize``): element k runs calls ``[k*chunk, (k+1)*chunk)``.
* PULL (the default): about as many elements as there are slots, each claiming chunks of
  calls from its submission's task list until none are left (chunks sized by the pace of the
  calls: see :mod:`corral.worker.chunks`). Tiny calls are then done by the first elements to
  start (the rest find nothing and exit; pending ones are cancelled), while long calls spread
  over every slot, with no guess at durations.

Either way, submissions are split at the cluster's MaxArraySize and MaxSubmitJobs; the
submissions of a split pull batch each get their own share of the calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import Limits
from ..store.protocol import Mode as Mode  # re-exported: plans are made here
from ..store.protocol import WorkerOptions, WorkerPlan


@dataclass(frozen=True)
class Plan:
    """One submission: ``elements`` array elements and the calls they may take."""

    sub: int
    elements: int
    mode: Mode
    ranges: tuple[tuple[int, int, int], ...]  # (first call, end call, attempt), end excluded
    chunk: int = 0  # static: calls per element
    first_element: int = 0  # pull: this submission's first element among all of the batch's
    total_elements: int = 1  # pull: elements of the batch in all its submissions

    def __post_init__(self) -> None:
        # Mode("static") is Mode.STATIC: plans written with the plan file's words still work.
        object.__setattr__(self, "mode", Mode(self.mode))

    def worker_plan(self, options: WorkerOptions | None = None, max_requeues: int = 0) -> WorkerPlan:
        """What the worker reads (see :mod:`corral.worker.run`), with the
        batch's ``options`` and how often a call may be requeued from a checkpoint."""
        return WorkerPlan.build(
            options or WorkerOptions(),
            mode=self.mode,
            tasks=tuple((c, a) for start, end, a in self.ranges for c in range(start, end)),
            chunk=self.chunk,
            first_element=self.first_element,
            total_elements=self.total_elements,
            max_requeues=max_requeues,
        )

    def covers(self, call: int, attempt: int) -> bool:
        """True when this submission's elements may run attempt ``attempt`` of ``call``."""
        return any(start <= call < end and a == attempt for start, end, a in self.ranges)

    def calls(self) -> range | list[int]:
        if len(self.ranges) == 1:
            return range(self.ranges[0][0], self.ranges[0][1])
        return [c for start, end, _ in self.ranges for c in range(start, end)]


def elements_per_submission(limits: Limits) -> int:
    """The most elements one submission may have."""
    cap = limits.max_array_size
    if limits.max_submit_jobs is not None:
        cap = min(cap, limits.max_submit_jobs)
    return max(1, cap)


def plan_batch(
    n_calls: int, limits: Limits, *, chunksize: int | None = None, max_running: int | None = None
) -> list[Plan]:
    """Split ``n_calls`` calls into submissions (see the module docstring)."""
    if n_calls < 1:
        return []
    cap = elements_per_submission(limits)
    if chunksize is not None:
        if chunksize < 1:
            raise ValueError(f"chunksize={chunksize!r} must be at least 1")
        total = -(-n_calls // chunksize)
        plans = []
        for sub, first in enumerate(range(0, total, cap)):
            count = min(cap, total - first)
            start, end = first * chunksize, min(n_calls, (first + count) * chunksize)
            plans.append(Plan(sub, count, Mode.STATIC, ((start, end, 0),), chunk=chunksize))
        return plans
    total = max(1, min(n_calls, limits.slots, max_running or n_calls))
    # Elements claim chunks of their own submission's task list: a batch split at
    # MaxArraySize gives each submission a share of the calls in proportion to its elements.
    plans = []
    for sub, first in enumerate(range(0, total, cap)):
        elements = min(cap, total - first)
        start, end = first * n_calls // total, (first + elements) * n_calls // total
        plans.append(
            Plan(sub, elements, Mode.PULL, ((start, end, 0),), first_element=0, total_elements=elements)
        )
    return plans


def element_of_call(plan: Plan, call: int) -> int | None:
    """In a static plan, the element that runs ``call``; None for pull plans."""
    if plan.mode is not Mode.STATIC:
        return None
    return (call - plan.ranges[0][0]) // plan.chunk


def plan_tasks(
    sub: int, tasks: list[tuple[int, int]], limits: Limits, *, max_running: int | None = None
) -> Plan:
    """A pull submission for a few scattered calls, each at its own attempt: how failed
    calls are resubmitted (only those calls, in as few elements as the slots allow)."""
    elements = max(
        1, min(len(tasks), limits.slots, max_running or len(tasks), elements_per_submission(limits))
    )
    ranges = tuple((call, call + 1, attempt) for call, attempt in sorted(tasks))
    return Plan(sub, elements, Mode.PULL, ranges, first_element=0, total_elements=elements)
