"""Taking calls away from the elements: how the client cancels a call no element has taken.

Elements take calls by chunks: an exclusive claim file ``claims/<sub>.<pos>`` for positions
``pos .. pos+n-1`` of a submission's task list (see :mod:`corral.store.batch`). The client
takes calls the same two ways:

* **the rest of a submission** (a batch cancelled, its dependency never met): it claims,
  like one more element, every range nobody claimed: from the frontier of a pull plan to its
  end, and each static element's range that its element has not claimed. Whatever an element
  claimed first stays the element's;
* **one call in the middle** (``future.cancel()``): it marks ``cancels/<call>.<attempt>``
  first, then looks whether a claim already covers the call's position. None does: the call
  is cancelled, and the element that claims its chunk later finds the mark (elements list
  the marks right after each claim) and skips it. One does: ``cancel()`` returns False, as
  for a running call; should the element have seen the mark all the same, it skips the call
  and the call ends with JobCancelledError (see :meth:`BatchState._take`).

Everything here runs under the cluster's lock.
"""

from __future__ import annotations

from collections.abc import Callable

from ..store.protocol import ChunkClaim, Claim, Mode
from .ledger import Phase
from .tracking import BatchState


def cancel_one(batch: BatchState, call: int, error: BaseException | None = None) -> bool:
    """Cancel ``call`` if no element has taken it (see the module docstring); with
    ``error``, the call fails with it instead."""
    ledger = batch.ledger
    if ledger.phase(call) is not Phase.WAITING:
        return False
    attempt = ledger.attempt(call)
    batch.store.mark_cancel(call, attempt)
    for sub in ledger.covering(call):
        number = batch.subs.index(sub)
        position = _position(batch, number, call, attempt)
        if position is None:
            continue
        for start, claim in batch.store.chunk_claims(number).items():
            if start <= position < start + claim.n and not claim.who.by_client:
                return False  # an element took it: it runs
    return ledger.cancel(call, error)


def take_unclaimed(batch: BatchState, error_of: Callable[[int], BaseException] | None = None) -> list[int]:
    """Claim, for the client, every range of every submission that no element claimed;
    cancel (in the ledger) the calls no element took, and return them. With ``error_of``,
    they fail with ``error_of(call)`` instead."""
    ledger = batch.ledger
    if not ledger.unclaimed_count():
        return []
    for number, sub in enumerate(batch.subs):
        tasks = batch.tasks_of(number)
        if not any(ledger.phase(c) is Phase.WAITING and ledger.attempt(c) == a for c, a in tasks):
            continue
        if sub.plan.mode is Mode.STATIC:
            _claim_static(batch, number, len(tasks), sub.plan.chunk, sub.plan.elements)
        else:
            _claim_frontier(batch, number, len(tasks))
    cancelled = []
    for number in range(len(batch.subs)):
        tasks = batch.tasks_of(number)
        for start, claim in batch.store.chunk_claims(number).items():
            if not claim.who.by_client:
                continue
            for call, attempt in tasks[start : start + claim.n]:
                error = None if error_of is None else error_of(call)
                if ledger.attempt(call) == attempt and ledger.cancel(call, error):
                    cancelled.append(call)
    return cancelled


def _claim_frontier(batch: BatchState, number: int, length: int) -> None:
    """Claim a pull plan's positions from its frontier (the end of the elements' claims) on."""
    claims = batch.store.chunk_claims(number)
    position = 0
    while position < length:
        found = claims.get(position) or batch.store.read_chunk_claim(number, position)
        if found is None:
            mine = ChunkClaim(who=Claim.CLIENT_CANCEL, n=length - position)
            if batch.store.claim_chunk(number, position, mine):
                return
            found = batch.store.read_chunk_claim(number, position)  # an element was faster
            if found is None:
                return  # cannot happen: claims are never removed; stop rather than spin
        position += found.n


def _claim_static(batch: BatchState, number: int, length: int, chunk: int, elements: int) -> None:
    """Claim each static element's range that its element has not claimed."""
    claims = batch.store.chunk_claims(number)
    for index in range(elements):
        start = index * chunk
        if start < length and start not in claims:
            batch.store.claim_chunk(
                number, start, ChunkClaim(who=Claim.CLIENT_CANCEL, n=min(chunk, length - start))
            )


def _position(batch: BatchState, number: int, call: int, attempt: int) -> int | None:
    """Where (call, attempt) stands in submission ``number``'s task list."""
    offset = 0
    for start, end, ranged in batch.subs[number].plan.ranges:
        if ranged == attempt and start <= call < end:
            return offset + call - start
        offset += end - start
    return None
