"""Integration tests against the real SGE test cell, which these fixtures start
(scripts/test-sge.sh start: idempotent, well under a second when it already runs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import cell, clear_queue


@pytest.fixture(scope="session", autouse=True)
def sge_cell() -> None:
    """The real cell must be up: a cell that cannot start fails the tests, never skips."""
    cell("start")


@pytest.fixture(autouse=True)
def fresh_queue() -> Iterator[None]:
    """Leave nothing of ours in the queue for the next test."""
    yield
    clear_queue()
