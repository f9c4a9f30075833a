"""The work dir on the real SLURM cluster: a big argument given to many calls is written
once, and the nodes read it back (each call with a copy of its own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..unit.test_blobs import MB, folder_size, total_and_scribble

pytestmark = pytest.mark.usefixtures("fresh_queue")


def test_a_map_over_four_references_to_one_50_mb_array_writes_under_60_mb(
    make_executor: object, workdir: str
) -> None:
    big = np.ones(50 * MB // 8)
    ex = make_executor("slurm", progress=False, time="5:00")  # type: ignore[operator]
    totals = list(ex.map(total_and_scribble, [big] * 4, range(4), chunksize=1))
    assert totals == [big.size] * 4  # four elements read it, and no call saw another's changes
    assert folder_size(Path(workdir)) < 60 * MB
