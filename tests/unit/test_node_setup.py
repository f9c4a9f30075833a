"""The node setup on the local backend: ``setup=`` callables (Executor, Pool, ``@task``) run
once per element before its calls, a failing one fails that element's calls with its own
exception, bad values are refused before anything is submitted, and the client's logging
level and format reach the calls' stderr unless ``forward_logging=False``.
The same is proven on real SLURM in tests/slurm/test_node_setup_slurm.py."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.environment import split_setup
from corral.errors import ConfigError, ResourceError
from corral.worker.setup import LogSettings

MARKS = "CORRAL_TEST_SETUP_MARKS"  # the shared folder each setup run writes a file into
CLIENT_FORMAT = "CLIENT|%(levelname)s|%(name)s|%(message)s"


class SetupFailed(Exception):
    """The setup's own exception type, which the calls must raise."""


def mark_setup() -> None:
    """One file per run, named by the process: the count of runs, and which processes ran it."""
    (Path(os.environ[MARKS]) / f"setup-{os.getpid()}").touch(exist_ok=False)
    os.environ["SETUP_DONE"] = "yes"


def mark_init(tag: str) -> None:
    (Path(os.environ[MARKS]) / f"init-{tag}-{os.getpid()}").touch(exist_ok=False)


def failing_setup() -> None:
    raise SetupFailed("no license server")


def seen(x: int) -> tuple[int, int, str | None, str | None]:
    return x, os.getpid(), os.environ.get("SETUP_DONE"), os.environ.get("FROM_SHELL")


def ran(x: int) -> int:
    (Path(os.environ[MARKS]) / f"call-{x}").touch()
    return x


def talk(x: int) -> int:
    logging.getLogger("node.calls").info("info line %d", x)
    logging.getLogger("node.calls").debug("debug line %d", x)
    return x


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    monkeypatch.setenv(MARKS, str(folder))  # the local backend's jobs inherit it
    return folder


@pytest.fixture
def client_logging() -> Iterator[logging.Handler]:
    """The client's root logger as a user's script sets it: INFO, one handler with its format
    (pytest's own handlers set aside for the test)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter(CLIENT_FORMAT))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield handler
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def runs(marks: Path, kind: str = "setup") -> list[int]:
    return sorted(int(p.name.rsplit("-", 1)[1]) for p in marks.glob(f"{kind}-*"))


def test_executor_setup_runs_once_per_element_before_its_calls(make_executor, marks: Path) -> None:
    ex = make_executor("local", setup=[mark_setup])
    results = list(ex.map(seen, range(40), chunksize=10))  # 4 elements of 10 calls
    assert [r[0] for r in results] == list(range(40))
    assert all(r[2] == "yes" for r in results)  # every call ran after its element's setup
    pids = runs(marks)
    assert len(pids) == 4 and sorted({r[1] for r in results}) == pids  # once per element, each its own


def test_submits_share_the_setup_of_their_element(make_executor, marks: Path) -> None:
    ex = make_executor("local", setup=mark_setup, max_workers=1)  # one element pulls every call
    results = [f.result(timeout=60) for f in [ex.submit(seen, i) for i in range(10)]]
    assert len(runs(marks)) == len({r[1] for r in results}) == 1


def test_setup_mixes_shell_lines_and_callables(make_executor, marks: Path) -> None:
    ex = make_executor("local", setup=["export FROM_SHELL=1", mark_setup])
    assert ex.submit(seen, 1).result(timeout=60)[2:] == ("yes", "1")
    assert ex.environment.setup == ("export FROM_SHELL=1",)  # the callables never reach the script


def test_a_failing_setup_fails_the_elements_calls_with_its_own_exception(make_executor, marks: Path) -> None:
    ex = make_executor("local", setup=[failing_setup])
    futures = [ex.submit(ran, i) for i in range(3)]
    for future in futures:
        error = future.exception(timeout=60)
        assert type(error) is SetupFailed and str(error) == "no license server"
        assert any("node setup" in note and "failing_setup" in note for note in error.__notes__)
    assert not list(marks.glob("call-*"))  # the function never ran


def test_bad_setup_values_are_refused_before_anything_is_submitted(make_executor, workdir: str) -> None:
    with pytest.raises(ResourceError, match="neither a line of shell nor a Python callable"):
        make_executor("local", setup=["module load x", 3])
    with pytest.raises(ResourceError, match="must be True"):
        make_executor("local", forward_logging="no")
    with pytest.raises(ConfigError, match="taken only from code"):
        corral.set_defaults(setup=[mark_setup])
    with pytest.raises(ResourceError, match="neither a line of shell"):
        corral.task(setup=[None])(seen)
    assert not Path(workdir).exists()  # nothing was written


def test_split_setup_keeps_the_configurations_lines_when_only_callables_are_given() -> None:
    assert split_setup(mark_setup) == (None, (mark_setup,))
    assert split_setup([mark_setup, "echo"]) == (["echo"], (mark_setup,))
    assert split_setup([]) == ([], ())  # an empty list still clears the lines
    assert split_setup("echo") == ("echo", ())


def test_pool_runs_setup_then_initializer_once_per_element(marks: Path, workdir: str) -> None:
    with corral.Pool(
        2, initializer=mark_init, initargs=("pool",), setup=mark_setup, backend="local", directory=workdir
    ) as pool:
        results = pool.map(seen, range(20), chunksize=5)  # 4 elements
    assert all(r[2] == "yes" for r in results)
    pids = sorted({r[1] for r in results})
    assert runs(marks) == pids == runs(marks, "init-pool") and len(pids) == 4


def test_task_setup_runs_once_per_element_of_a_batch(marks: Path, workdir: str) -> None:
    corral.set_defaults(backend="local", directory=workdir)
    prepared = corral.task(setup=[mark_setup])(seen)
    plain = corral.task(ran)
    with corral.Batch(max_size=5):
        refs = [prepared.distribute(i) for i in range(10)]  # 2 jobs of 5 calls
        other = plain.distribute(99)
    results = [r.result(timeout=60) for r in refs]
    assert other.result(timeout=60) == 99
    assert all(r[2] == "yes" for r in results)
    assert runs(marks) == sorted({r[1] for r in results}) and len(runs(marks)) == 2


def test_task_options_replace_the_setup(marks: Path, workdir: str) -> None:
    corral.set_defaults(backend="local", directory=workdir)
    base = corral.task(setup=[failing_setup])(seen)
    assert base.options(setup=[mark_setup]).distribute(1).result(timeout=60)[2] == "yes"
    with pytest.raises(SetupFailed):
        base.distribute(2).result(timeout=60)


def test_the_clients_level_and_format_reach_the_calls_stderr(make_executor, client_logging) -> None:
    before = logging.getLogger().handlers[:]  # ours first, then pytest's own for this phase
    future = make_executor("local").submit(talk, 7)
    assert future.result(timeout=60) == 7
    err = future.stderr()
    assert "CLIENT|INFO|node.calls|info line 7" in err.splitlines()
    assert "debug line" not in err
    assert logging.getLogger().handlers == before  # the client's logging is untouched


def test_forward_logging_false_leaves_the_nodes_logging_alone(make_executor, client_logging) -> None:
    future = make_executor("local", forward_logging=False).submit(talk, 7)
    assert future.result(timeout=60) == 7
    assert "line 7" not in future.stderr()  # Python's default: WARNING and above only


def test_a_pool_and_a_task_forward_logging_too(client_logging, workdir: str) -> None:
    with corral.Pool(2, backend="local", directory=workdir) as pool:
        async_result = pool.map_async(talk, [1])
        assert async_result.get(timeout=60) == [1]
        (future,) = async_result._futures
    assert "CLIENT|INFO|node.calls|info line 1" in future.stderr()
    corral.set_defaults(backend="local", directory=workdir)
    ref = corral.task(talk).distribute(2)
    assert ref.result(timeout=60) == 2 and "CLIENT|INFO|node.calls|info line 2" in ref.stderr()


def test_in_the_clients_own_process_its_logging_is_left_alone(make_executor, client_logging) -> None:
    before = logging.getLogger().handlers[:]
    assert make_executor("sequential").submit(talk, 3).result(timeout=60) == 3
    assert logging.getLogger().handlers == before
    stream = client_logging.stream
    assert isinstance(stream, io.StringIO)
    assert "CLIENT|INFO|node.calls|info line 3" in stream.getvalue()  # through the client's own handler


def test_log_settings_take_the_first_root_handlers_format_and_style() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        root.handlers[:] = []
        root.setLevel(logging.WARNING)
        assert LogSettings.of_client() is None  # nothing to pass on: a fresh process has this
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(logging.Formatter("{levelname}:{message}", "%H", style="{"))
        root.handlers[:] = [handler, logging.StreamHandler(io.StringIO())]
        root.setLevel(logging.DEBUG)
        assert LogSettings.of_client() == LogSettings(logging.DEBUG, "{levelname}:{message}", "%H", "{")
        root.handlers[:] = [logging.StreamHandler(io.StringIO())]  # no formatter: logging's default
        assert LogSettings.of_client() == LogSettings(logging.DEBUG, None)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_forward_logging_is_a_setting_of_every_layer(make_executor, client_logging) -> None:
    corral.set_defaults(forward_logging=False)
    ex = make_executor("local")
    assert ex.environment.forward_logging is False
    future = ex.submit(talk, 5)
    assert future.result(timeout=60) == 5 and "line 5" not in future.stderr()
    assert make_executor("local", forward_logging=True).environment.forward_logging is True
    with pytest.raises(ConfigError, match="forward_logging"):
        corral.set_defaults(forward_logging="off")


def test_callables_alone_keep_the_configurations_setup_lines(make_executor, marks: Path) -> None:
    corral.set_defaults(setup=["export FROM_SHELL=from-config"])
    ex = make_executor("local", setup=mark_setup)  # the venv a profile activates stays
    assert ex.submit(seen, 1).result(timeout=60)[2:] == ("yes", "from-config")
    ex = make_executor("local", setup=["export FROM_SHELL=from-code", mark_setup])  # lines replace lines
    assert ex.submit(seen, 2).result(timeout=60)[2:] == ("yes", "from-code")
