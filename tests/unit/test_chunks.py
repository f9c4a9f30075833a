"""Chunk claims: the chain of claims tiles a submission's task list exactly once, whatever
sizes concurrent elements choose, and pull elements size chunks by their pace."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from corral.errors import FormatError
from corral.store.protocol import ChunkClaim, Claim, Mode
from corral.store.streams import Result
from corral.worker.chunks import TARGET, frontier, next_chunk_size, take_chunk
from corral.worker.run import run_element

from .test_worker import items, make_batch, plan_of


def tiles(claims: dict[int, ChunkClaim], size: int) -> bool:
    """True when the claims cover positions 0..size-1, each exactly once."""
    pos = 0
    for start in sorted(claims):
        if start != pos:
            return False
        pos += claims[start].n
    return pos == size


@pytest.mark.parametrize(
    ("pace", "left", "elements", "n"),
    [
        (0.5, 1000, 4, 1),  # a call takes TARGET: one at a time
        (0.01, 1000, 4, 50),  # TARGET / pace
        (0.0001, 1000, 4, 125),  # capped at a share of what is left: 1000 // (2 * 4)
        (0.0, 1000, 4, 125),  # too fast to measure: the cap
        (10.0, 1000, 4, 1),  # slower than TARGET: still one
        (0.0001, 5, 4, 1),  # the last few calls: one each, to spread them
    ],
)
def test_the_next_chunk_is_sized_by_the_last_ones_pace(pace: float, left: int, elements: int, n: int) -> None:
    assert TARGET == 0.5
    assert next_chunk_size(pace, left, elements) == n


def test_threads_with_any_chunk_sizes_take_every_position_exactly_once(tmp_path: Path) -> None:
    store = make_batch(tmp_path, abs, [], plan_of(Mode.PULL, 0))
    size = 2000
    taken: list[tuple[int, int]] = []

    def walk(k: int) -> None:
        who, rng, pos = Claim(f"J_{k}", "h", 1 + k), random.Random(k), 0
        while (got := take_chunk(store, 0, size, pos, rng.randint(1, 40), who)) is not None:
            taken.append(got)
            pos = got[0] + got[1]

    threads = [threading.Thread(target=walk, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    covered = Counter(p for pos, n in taken for p in range(pos, pos + n))
    assert covered == {p: 1 for p in range(size)}
    claims = store.chunk_claims(0)
    assert tiles(claims, size) and len(claims) == len(taken)
    assert frontier(store, 0, size, 0) == size


def test_the_frontier_is_the_first_free_position(tmp_path: Path) -> None:
    store = make_batch(tmp_path, abs, [], plan_of(Mode.PULL, 0))
    who = Claim("J_0", "h", 1)
    assert store.claim_chunk(0, 0, ChunkClaim(who, 3)) and store.claim_chunk(0, 3, ChunkClaim(who, 2))
    assert not store.claim_chunk(0, 3, ChunkClaim(who, 9))
    assert frontier(store, 0, 10, 0) == 5 and frontier(store, 0, 4, 0) == 4
    assert take_chunk(store, 0, 10, 0, 100, who) == (5, 5)
    assert store.read_chunk_claim(0, 5) == ChunkClaim(who, 5) and store.read_chunk_claim(0, 1) is None


def test_a_planted_claim_stops_the_walk_not_the_element(tmp_path: Path) -> None:
    store = make_batch(tmp_path, abs, [((-i,), {}) for i in range(3)], plan_of(Mode.PULL, 3))
    Path(store.chunk_claim_path(0, 0)).write_bytes(b"not a claim")
    with pytest.raises(FormatError, match="is not a corral chunk claim"):
        store.read_chunk_claim(0, 0)
    assert run_element(store.path, 0, 0, "J_0", redirect=False) == (0, 0, 0)


def test_four_workers_share_ten_thousand_calls_with_few_claims(tmp_path: Path) -> None:
    calls = 10_000
    store = make_batch(
        tmp_path, abs, [((-i,), {}) for i in range(calls)], plan_of(Mode.PULL, calls, total_elements=4)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "corral.worker", store.path, "0", str(k), f"J_{k}"],
            env=env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        for k in range(4)
    ]
    assert [proc.wait(timeout=300) for proc in procs] == [0] * 4
    claims = store.chunk_claims(0)
    assert tiles(claims, calls)
    done = Counter(i.call for k in range(4) for i in items(store, f"J_{k}") if type(i) is Result)
    assert done == {c: 1 for c in range(calls)}
    print(f"\n{len(claims)} claim files for {calls} calls")  # reported: pytest -s
    assert len(claims) <= calls // 50  # the target: at most 0.05 files per call, streams and all
