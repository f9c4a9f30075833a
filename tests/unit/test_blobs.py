"""Big values in a batch's calls are written once: a map over four references to one 50 MB
array, or over four equal copies of it, writes it once to the work dir, and each call still
gets a copy of its own (local backend; tests/slurm/test_blobs_slurm.py runs it on SLURM)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import corral
from corral.store.pickling import BIG, Blobs, dumps, is_big, load_call

MB = 1 << 20


def folder_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def total_and_scribble(array: np.ndarray, i: int) -> float:
    total = float(array.sum())
    array[:] = i  # changes this call's copy only
    return total


def test_a_map_over_four_references_to_one_array_writes_it_once(tmp_path: Path) -> None:
    big = np.ones(50 * MB // 8)  # 50 MB
    with corral.Executor("local", str(tmp_path), progress=False) as ex:
        totals = list(ex.map(total_and_scribble, [big] * 4, range(4)))
    assert totals == [big.size] * 4  # no call saw another's scribbles
    assert folder_size(tmp_path) < 60 * MB


def test_equal_copies_and_submits_and_the_pool_write_it_once_too(tmp_path: Path) -> None:
    copies = [np.ones(50 * MB // 8) for _ in range(4)]
    with corral.Executor("local", str(tmp_path / "submits"), progress=False) as ex:
        with ex.batch():  # one batch, however long pickling 50 MB takes between two submits
            futures = [ex.submit(total_and_scribble, c, i) for i, c in enumerate(copies)]
        assert [f.result() for f in futures] == [copies[0].size] * 4
    assert folder_size(tmp_path / "submits") < 60 * MB
    with corral.Pool(2, backend="local", directory=str(tmp_path / "pool"), progress=False) as pool:
        assert pool.starmap(total_and_scribble, [(c, 0) for c in copies]) == [copies[0].size] * 4
    assert folder_size(tmp_path / "pool") < 60 * MB
    assert all((c == 1).all() for c in copies)  # the client's arrays are untouched


def length(data: bytes, tail: bytes) -> int:
    return len(data) + len(tail)


def test_big_bytes_are_shared_and_small_values_stay_in_the_calls(tmp_path: Path) -> None:
    blob = os.urandom(20 * MB)
    with corral.Executor("local", str(tmp_path), progress=False) as ex:
        assert list(ex.map(length, [blob] * 3, [b"x", b"yy", b"zzz"])) == [
            20 * MB + 1,
            20 * MB + 2,
            20 * MB + 3,
        ]
    assert folder_size(tmp_path) < 25 * MB
    (batch,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (batch / "blobs.bin").stat().st_mode & 0o777 == 0o600
    with corral.Executor("local", str(tmp_path / "small"), progress=False) as ex:
        assert list(ex.map(length, [b"a"], [b"b"])) == [2]
    (small,) = [p for p in (tmp_path / "small").iterdir() if p.is_dir()]
    assert not (small / "blobs.bin").exists()


def test_what_counts_as_big() -> None:
    assert is_big(b"x" * BIG) and is_big(bytearray(BIG)) and is_big(np.zeros(BIG // 8))
    assert not is_big(b"x" * (BIG - 1)) and not is_big(np.zeros(10)) and not is_big("x" * BIG)
    assert not is_big(np.array([object()] * BIG))  # arrays of objects pickle their objects


def test_a_reference_is_read_back_and_a_foreign_one_refused() -> None:
    blobs = Blobs()
    array = np.arange(BIG // 8, dtype=float)
    data = dumps(((array, array), {}), blobs)
    assert len(blobs.data) == 1 and len(data) < 1000
    (first, second), _ = load_call(data, blobs.data.__getitem__)
    assert (first == array).all() and first is second  # as pickle keeps one object once
    (again, _), _ = load_call(data, blobs.data.__getitem__)
    assert again is not first  # but each call gets its own
    with pytest.raises(pickle.UnpicklingError, match="not a reference corral wrote"):
        load_call(_with_persistent_id(("os.system", "ls")), blobs.data.__getitem__)


def _with_persistent_id(pid: object) -> bytes:
    class Forger(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return pid if obj == "marker" else None

    with io.BytesIO() as file:
        Forger(file, 5).dump(["marker"])
        return file.getvalue()
