"""Pacing a batch's arrays while they run: lifting a probing array's throttle once its calls
turn out long, and cancelling pending elements once every call is taken. Both run under
the cluster's lock, called by its poll loop (see :mod:`corral.engine.cluster`)."""

from __future__ import annotations

import logging

from ..backends.base import Backend
from ..errors import SchedulerError
from .policy import PollPolicy
from .tracking import BatchState

log = logging.getLogger(__name__)


def widen(backend: Backend, policy: PollPolicy, batch: BatchState, now: float) -> None:
    """Lift a probing array's throttle when the work left, at the rate seen so far, would
    take longer than ``widen_after``, or when one of its elements ended with work left."""
    for sub in batch.subs:
        if not sub.probing or sub.job_id is None:
            continue
        left = batch.unclaimed_count()
        # Calls started so far tell the pace: a long call keeps this at one.
        started = batch.ledger.started
        if left and not sub.final_at:
            if batch.first_claim_at is None or now - batch.first_claim_at < policy.probe_for:
                continue
            if left * (now - batch.first_claim_at) / max(1, started) <= policy.widen_after:
                continue
        sub.probing = False
        if left:
            log.debug(
                "widening %s to %d elements: %d calls left, %d started in %.2f s, %d elements ended",
                sub.job_id, sub.plan.elements, left, started,
                now - (batch.first_claim_at or now), len(sub.final_at),
            )  # fmt: skip
            try:
                backend.widen(sub.job_id, sub.plan.elements)
            except SchedulerError as exc:  # the array still runs, one element at a time
                sub.probing = True
                log.warning("could not widen %s: %s", sub.job_id, exc)


def release_idle(backend: Backend, batch: BatchState) -> None:
    """Once every call is taken, pending elements have nothing to do: cancel them."""
    if batch.unclaimed_count():
        return
    idle = [s for s in batch.subs if s.submitted and not s.all_final and not s.pending_cancelled]
    if len(idle) == 1 == len(batch.subs) == idle[0].plan.elements and batch.ledger.started:
        idle = []  # its only element has started (it claimed a call): nothing is pending
    if not idle:
        return
    holders = batch.holders()  # requeued elements pending with a call to finish
    targets: list[str] = []
    for sub in idle:
        sub.pending_cancelled = True
        elements = [sub.element(i) for i in range(sub.plan.elements) if i not in sub.final_at]
        if any(e in holders for e in elements):
            targets += [e for e in elements if e not in holders]
        elif sub.job_id:
            targets.append(sub.job_id)
    try:
        backend.cancel(targets, pending_only=True)
    except SchedulerError as exc:
        log.warning("could not cancel idle pending elements: %s", exc)
