"""The submission budget: how many scheduler submissions one process may make.

A loop that submits one job per iteration (``for x in data: f.distribute(x)`` outside a
``Batch``, or ``executor.submit`` ten thousand times) floods the scheduler; admins notice
before the user does. Every front-end charges this budget once per batch it hands to the
engine (a ``Batch`` block or a ``map`` counts once, however many calls it holds), and the
charge past the limit raises :class:`~corral.errors.SubmissionBudgetError` before anything
more is submitted. The limit comes from the configuration (``submit_budget``, default 500;
0 turns it off; see :mod:`corral.config`). Resubmissions of failed calls are not charged.
"""

from __future__ import annotations

import threading

from ..errors import SubmissionBudgetError

_lock = threading.Lock()
_spent = 0


def charge(limit: int, what: str = "job") -> None:
    """Count one submission against ``limit`` (0: no limit); raise instead when this one
    would go past it."""
    global _spent
    with _lock:
        if limit and _spent >= limit:
            raise SubmissionBudgetError(
                f"not submitting this {what}: this process has already made {_spent} submissions, "
                f"its budget (submit_budget={limit}). A loop that submits one call at a time floods "
                "the scheduler with single jobs; hand many calls over at once instead: "
                "`with corral.Batch(): f.distribute(x)` for tasks, `executor.map` or `pool.map`. "
                "If you do mean to make more submissions, raise the budget with "
                "corral.set_defaults(submit_budget=N), submit_budget in a config file, or "
                "CORRAL_SUBMIT_BUDGET=N (0 for no budget)."
            )
        _spent += 1


def spent() -> int:
    """How many submissions this process has made so far."""
    return _spent


def reset() -> None:
    """Start counting from zero again (a long-lived process, or a test suite between tests)."""
    global _spent
    with _lock:
        _spent = 0
