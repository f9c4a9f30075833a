"""How often the engine looks at the work dir and the scheduler, and how it paces arrays."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class PollPolicy:
    """How often the engine looks, in seconds."""

    files_min: float = 0.02  # work-dir listing interval while calls start and finish
    files_max: float = 0.5  # (a listing is one readdir per folder: cheap even on NFS)
    files_growth: float = 1.25
    files_fast_for: float = 2.0  # keep the shortest interval this long after any activity
    # Widen a probing array when the work left, at the first element's pace, would take
    # longer than this: well above the ~0.75 s it takes to launch the other elements, since
    # the pace of a just-started element is underestimated.
    widen_after: float = 2.0
    probe_for: float = 0.2  # watch the first element this long before judging its pace
    scheduler_min: float = 1.0  # bulk status query interval, growing while nothing changes
    scheduler_max: float = 15.0
    # While every started element's stream shows it alive (a record within 3 heartbeats, see
    # corral.store.protocol.BEAT) and none has ended unconfirmed, the scheduler has nothing
    # to tell: it is asked this rarely. None: four times scheduler_max (a minute by default),
    # so that a policy tuned for quick answers stays quick.
    scheduler_quiet: float | None = None

    @property
    def quiet_interval(self) -> float:
        """Seconds between status queries while the streams tell all (see scheduler_quiet)."""
        return self.scheduler_quiet if self.scheduler_quiet is not None else 4 * self.scheduler_max

    growth: float = 1.5
    jitter: float = 0.15  # +-15 %, so that many clients do not query in step
    backoff_max: float = 60.0  # after failed queries
    outcome_grace: float = 10.0  # a final job's outcome may appear this late (slow filesystems)
    lost_after: float = 120.0  # a job unknown to the scheduler this long is LOST

    @classmethod
    def from_env(cls) -> PollPolicy:
        """Defaults, with ``CORRAL_OUTCOME_GRACE`` and ``CORRAL_POLL_MAX`` applied."""
        return cls(
            outcome_grace=_env_float("CORRAL_OUTCOME_GRACE", cls.outcome_grace),
            scheduler_max=_env_float("CORRAL_POLL_MAX", cls.scheduler_max),
        )
