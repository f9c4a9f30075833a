"""keep=: which batch folders stay once the results are in (local backend)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import corral
from corral.store import records


def batches(root: Path) -> list[str]:
    return sorted(os.listdir(root)) if root.exists() else []


def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(x)
    return x


def test_the_executor_keeps_all_by_default_and_none_when_asked(tmp_path: Path) -> None:
    with corral.Executor("local", str(tmp_path / "all"), progress=False) as ex:
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
    assert len(batches(tmp_path / "all")) == 1
    with corral.Executor("local", str(tmp_path / "none"), progress=False, keep="none") as ex:
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
        futures = [ex.submit(fail_on_odd, x) for x in (1, 2)]
        assert isinstance(futures[0].exception(timeout=60), ValueError)
    assert batches(tmp_path / "none") == []


def test_failed_keeps_only_the_batches_with_a_failure(tmp_path: Path) -> None:
    with corral.Executor("local", str(tmp_path), progress=False, keep="failed") as ex:
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
        with pytest.raises(ValueError):
            list(ex.map(fail_on_odd, [0, 1, 2]))
    (kept,) = batches(tmp_path)
    assert kept.startswith("fail_on_odd-")
    assert records.summarize(str(tmp_path / kept)).failures  # its logs are there


def test_the_pool_leaves_nothing_when_all_went_well(tmp_path: Path) -> None:
    with corral.Pool(2, backend="local", directory=str(tmp_path), progress=False) as pool:
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
        with pytest.raises(ValueError):
            pool.map(fail_on_odd, [1])
    (kept,) = batches(tmp_path)
    assert kept.startswith("fail_on_odd-")
    pool = corral.Pool(2, backend="local", directory=str(tmp_path / "joined"), progress=False)
    assert pool.map(abs, [-4]) == [4]
    pool.close()
    pool.join()
    assert batches(tmp_path / "joined") == []


def test_keep_comes_from_the_configuration_too(tmp_path: Path) -> None:
    corral.set_defaults(keep="none")
    with corral.Executor("local", str(tmp_path), progress=False) as ex:
        assert list(ex.map(abs, [-1])) == [1]
    assert batches(tmp_path) == []
    with pytest.raises(corral.ConfigError, match="keep='some' must be one of 'all', 'failed', 'none'"):
        corral.Executor("local", str(tmp_path), keep="some")


def test_a_batch_not_ended_stays(tmp_path: Path) -> None:
    ex = corral.Executor("local", str(tmp_path), progress=False, keep="none")
    future = ex.submit(__import__("time").sleep, 30)
    ex.shutdown(wait=False, cancel_futures=False)  # the results are not in: nothing is removed
    assert len(batches(tmp_path)) == 1
    future.cancel_job()


def test_a_sweep_keeps_its_batches() -> None:
    from corral import sweep

    with pytest.raises(TypeError, match="keep= is not an option of a sweep"):
        sweep.Sweep(abs, {"x": sweep.grid([1])}, metric="loss", keep="none")


def test_remove_tree_removes_only_a_private_folder_and_follows_no_link(tmp_path: Path) -> None:
    from corral.errors import UnsafeWorkDirError
    from corral.transports.local import LocalTransport

    transport = LocalTransport()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    batch = tmp_path / "batch"
    batch.mkdir(mode=0o700)
    (batch / "streams").mkdir()
    (batch / "streams" / "link").symlink_to(outside)  # planted: removed, never followed
    transport.remove_tree(str(batch))
    assert not batch.exists() and (outside / "precious").read_text() == "keep me"
    transport.remove_tree(str(batch))  # gone already: nothing to do
    link = tmp_path / "link"
    link.symlink_to(outside)
    with pytest.raises(UnsafeWorkDirError, match="symbolic link"):
        transport.remove_tree(str(link))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(UnsafeWorkDirError):
        transport.remove_tree(str(shared))
    assert outside.exists() and shared.exists()
