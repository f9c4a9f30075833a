"""From calls to submissions: pickling before anything is written, the array specs of a
batch, and the small arrays that carry resubmitted calls. Pure, apart from pickling."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle

from .backends.base import ArraySpec, Limits
from .errors import NestedSubmissionError, SerializationError
from .planning import Plan, plan_tasks
from .resources import Resources
from .store import BatchStore
from .worker import inside_job, pack_function

if TYPE_CHECKING:
    from .tracking import BatchState

Call = tuple[tuple[Any, ...], dict[str, Any]]


def guard_nested(allow_nested: bool) -> None:
    element = inside_job()
    if element and not allow_nested:
        raise NestedSubmissionError(
            f"this code runs inside corral job {element} and tried to submit more jobs; "
            "pass allow_nested=True if that is what you want"
        )


def pickle_calls(fn: Callable[..., Any], calls: Sequence[Call]) -> tuple[bytes, list[bytes]]:
    try:
        function = pack_function(fn)
    except Exception as exc:
        raise SerializationError(f"cannot pickle the function {fn!r}: {exc}") from exc
    payloads = []
    for index, call in enumerate(calls):
        try:
            payloads.append(cloudpickle.dumps(call))
        except Exception as exc:
            raise SerializationError(f"cannot pickle the arguments of call {index}: {exc}") from exc
    return function, payloads


def probes(plans: list[Plan]) -> bool:
    """A lone pull array starts throttled to one element (one element starts about as fast as
    a plain job, eight take twice as long), and is widened once its calls turn out long enough
    to need more (Cluster._widen)."""
    return len(plans) == 1 and plans[0].mode == "pull" and plans[0].elements > 1


def array_specs(
    plans: list[Plan],
    batch_dir: str,
    name: str,
    resources: Resources,
    max_running: int | None,
    command: str | None = None,
) -> list[ArraySpec]:
    """The submissions of a batch (see probes for the first one's throttle)."""
    probe = probes(plans)
    return [
        ArraySpec(
            batch_dir=batch_dir,
            sub=plan.sub,
            elements=plan.elements,
            resources=resources,
            job_name=f"corral-{name}"[:64],
            python=sys.executable,
            chdir=os.getcwd(),
            max_running=1 if probe else max_running if plan.mode == "static" else None,
            command=command,
        )  # fmt: skip
        for plan in plans
    ]


def log_pattern(store: BatchStore) -> tuple[str, str]:
    return store.element_log_pattern("out", "{job}", "{index}"), store.element_log_pattern(
        "err", "{job}", "{index}"
    )


def retry_plans(
    first_sub: int,
    retries: list[tuple[int, int, Resources]],
    limits_of: Callable[[Resources], Limits],
    max_running: int | None,
) -> list[tuple[Plan, Resources]]:
    """New submissions for calls to run again: one per distinct resources (a call that timed
    out may ask for more time), numbered from ``first_sub``. ``retries`` holds
    (call, attempt, resources)."""
    groups: dict[Resources, list[tuple[int, int]]] = {}
    for call, attempt, resources in retries:
        groups.setdefault(resources, []).append((call, attempt))
    plans = []
    for offset, (resources, tasks) in enumerate(groups.items()):
        plan = plan_tasks(first_sub + offset, tasks, limits_of(resources), max_running=max_running)
        plans.append((plan, resources))
    return plans


def pack_engine(batch: BatchState) -> bytes:
    """The batch settings :func:`attach` needs (cloudpickle: ``retry_on`` may name classes
    defined in ``__main__``)."""
    settings = {
        "name": batch.name,
        "max_running": batch.max_running,
        "retry": batch.retry,
        "worker_options": batch.worker_options,
    }
    return bytes(cloudpickle.dumps(settings))


def pack_submission(plan: Plan, spec: ArraySpec) -> bytes:
    return pickle.dumps({"plan": plan, "spec": spec}, protocol=pickle.HIGHEST_PROTOCOL)
