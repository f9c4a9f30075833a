"""What a type checker sees of the Executor: ``submit`` and ``map`` are generic in the
function's return type, ``await`` gives that type, and ``submit`` checks the arguments
against the function's parameters (ParamSpec). mypy (its API) checks small snippets
against this tree's sources."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from mypy import api

import corral

SRC = Path(corral.__file__).resolve().parents[1]

GOOD = """
from collections.abc import Iterator
import corral

def f() -> int:
    return 1

def g(x: int, name: str = "") -> str:
    return name * x

with corral.Executor(backend="local") as ex:
    future = ex.submit(f)
    reveal_type(future)
    reveal_type(future.result())
    reveal_type(ex.submit(g, 2, name="a"))
    reveal_type(ex.map(f))
    reveal_type(ex.map(g, [1, 2]))
    values: Iterator[int] = ex.map(f)
    bare: corral.CorralFuture = future  # a bare annotation stays valid under --strict

async def waits(ex: corral.Executor) -> None:
    reveal_type(await ex.submit(f))
"""

BAD = """
import corral

def h(x: int) -> int:
    return x

with corral.Executor(backend="local") as ex:
    ex.submit(h, "not a number")
    ex.submit(h)
    ex.submit(h, 1, extra=2)
    text: str = ex.submit(h, 1).result()
"""


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], list[str]]]:
    """mypy --strict on both snippets at once (one run: most of its time is corral's own
    modules): for each, the revealed types (``builtins.`` left out, as mypy writes them
    today) and the error lines."""
    folder = tmp_path_factory.mktemp("typing")
    for name, text in (("good", GOOD), ("bad", BAD)):
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MYPYPATH", str(SRC))  # this tree's corral, whatever the venv installed
        out, err, _ = api.run(
            [
                "--strict",
                "--no-incremental",
                "--follow-imports=silent",
                str(folder / "good.py"),
                str(folder / "bad.py"),
            ]
        )
    assert not err, err
    found: dict[str, tuple[list[str], list[str]]] = {}
    for name in ("good", "bad"):
        lines = [line for line in out.splitlines() if line.startswith(str(folder / f"{name}.py"))]
        revealed = [
            t.replace("builtins.", "")
            for line in lines
            for t in re.findall(r'Revealed type is "([^"]+)"', line)
        ]
        found[name] = revealed, [line for line in lines if ": error:" in line]
    return found


def test_submit_map_and_await_are_typed_by_the_function(
    checked: dict[str, tuple[list[str], list[str]]],
) -> None:
    revealed, errors = checked["good"]
    assert errors == []
    assert revealed == [
        "corral.engine.futures.CorralFuture[int]",
        "int",
        "corral.engine.futures.CorralFuture[str]",
        "typing.Iterator[int]",
        "typing.Iterator[str]",
        "int",
    ]


def test_submit_refuses_arguments_the_function_does_not_take(
    checked: dict[str, tuple[list[str], list[str]]],
) -> None:
    _, errors = checked["bad"]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [8, 9, 10, 11], errors  # each misuse, and nothing else
    assert 'Argument 2 to "submit" of "Executor" has incompatible type "str"; expected "int"' in errors[0]
