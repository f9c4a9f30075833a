"""Taking work by chunks: one exclusive create per chunk of a submission's task list.

A claim ``claims/<s>.<pos>`` holds its size n (a :class:`~corral.store.protocol.ChunkClaim`),
so the claims of a submission form a chain from position 0: each one starts where the one
before it ends. An element walks that chain (reading each claim, never waiting: a claim is
created whole) and tries to create the claim at its end; whoever creates it first runs those
calls, the others read its n and walk on. Every position is so taken exactly once, whatever
the sizes the elements chose.

PULL elements choose n themselves: 1 at first, then as many calls as take about
:data:`TARGET` seconds by the last chunk's pace, but never more than a share of what is
left (so the last calls still spread over the elements). STATIC element k claims its whole
range at ``k * chunk`` at once.
"""

from __future__ import annotations

import math

from ..store.batch import BatchStore
from ..store.protocol import ChunkClaim, Claim

#: Seconds of work a PULL element aims to take with one claim.
TARGET = 0.5


def next_chunk_size(seconds_per_call: float, left: int, total_elements: int) -> int:
    """How many calls to claim next: ``TARGET / seconds_per_call``, between 1 and
    ``left // (2 * total_elements)`` (at least 1)."""
    cap = max(1, left // (2 * total_elements))
    if not seconds_per_call > 0 or not math.isfinite(seconds_per_call):
        return cap  # too fast to measure
    return max(1, min(cap, round(TARGET / seconds_per_call)))


def take_chunk(
    store: BatchStore, sub: int, size: int, pos: int, n: int, who: Claim
) -> tuple[int, int] | None:
    """Walk submission ``sub``'s claims (``size`` tasks) from ``pos``, a point of the chain,
    and claim up to ``n`` calls at its end: (position, count) taken, or None when every
    position is taken. :class:`~corral.errors.FormatError` for a claim that is not one
    corral writes (its size unknown, no position after it can be trusted)."""
    while pos < size:
        count = min(n, size - pos)
        if store.claim_chunk(sub, pos, ChunkClaim(who, count)):
            return pos, count
        found = store.read_chunk_claim(sub, pos)
        if found is not None:  # None: removed since; try that name again
            pos += found.n
    return None


def frontier(store: BatchStore, sub: int, size: int, pos: int) -> int:
    """The first position from ``pos`` on that nobody claimed (``size`` when all are), by
    reading the chain alone."""
    while pos < size:
        found = store.read_chunk_claim(sub, pos)
        if found is None:
            return pos
        pos += found.n
    return size
