"""corral.store.rungs: rung records made on the nodes, exclusively, whole and once per
(trial, milestone), read through a cache; judged here by the real ASHA rule."""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import random
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from corral.errors import FormatError, UnsafeWorkDirError
from corral.frontends.sweep.schedulers import ASHA
from corral.store.rungs import RungRecord, Rungs

ASHA9 = ASHA(min_t=1, max_t=9, eta=3)  # milestones 1, 3, 9
ASHA3 = ASHA(min_t=1, max_t=81, eta=3)


def asha(value: float | None, milestone: int, scheduler: ASHA = ASHA9) -> Any:
    """The decide callable a trial reporting ``value`` at ``milestone`` passes (mode "max")."""
    return lambda earlier: scheduler.keeps(value, earlier, "max", milestone)


def never(earlier: list[float | None]) -> tuple[bool, float | None]:
    raise AssertionError("decided again: the record that exists is the decision")


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# -- a run ---------------------------------------------------------------------------------

# (trial, milestone, value) in the order they report; then continues?, the cutoff, and how many
# numbers it was compared with. At rung 1 a trial must be the best while n < 6, then one may beat it.
RUN: list[tuple[int, int, float | None, bool, float | None, int]] = [
    (0, 1, 0.5, True, None, 0),  # first at rung 1: no company
    (1, 1, 0.3, False, 0.5, 1),  # below 0.5
    (2, 1, 0.9, True, 0.9, 2),  # the best: it had to match its own value
    (0, 3, 0.6, True, None, 0),
    (3, 1, 0.4, False, 0.9, 3),
    (2, 3, 0.7, True, 0.7, 1),
    (4, 1, 0.8, False, 0.9, 4),  # second of five
    (5, 1, 0.85, True, 0.85, 5),  # second of six: one may be better
    (5, 3, 0.65, False, 0.7, 2),
    (6, 1, None, False, 0.85, 6),  # no number: last of seven
    (7, 1, 0.2, False, 0.85, 6),  # trial 6's None is not counted: n=7, not 8
    (0, 9, 0.1, True, None, 0),  # max_t: nothing is pruned
    (2, 9, 0.05, True, None, 1),  # max_t, even below every earlier value
]


def test_a_simulated_asha_run_gives_the_expected_table(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    for trial, milestone, value, keep, cutoff, earlier in RUN:
        record = Rungs(folder).report(trial, 0, milestone, value, asha(value, milestone))  # one per process
        assert (record.trial, record.milestone, record.value) == (trial, milestone, value)
        assert (record.keep, record.cutoff, record.earlier) == (keep, cutoff, earlier), (trial, milestone)
    reader = Rungs(folder)
    assert reader.milestones() == [1, 3, 9]
    keeps = {trial: record.keep for trial, record in reader.records(1).items()}
    assert keeps == {0: True, 1: False, 2: True, 3: False, 4: False, 5: True, 6: False, 7: False}
    assert reader.records(3)[5].cutoff == 0.7
    assert reader.records(9)[2].cutoff is None
    assert reader.records(27) == {}
    assert names(tmp_path / "rungs" / "1") == [f"{trial}.json" for trial in range(8)]


def test_readers_of_a_folder_that_does_not_exist_find_nothing(tmp_path: Path) -> None:
    rungs = Rungs(str(tmp_path / "none"))
    assert rungs.milestones() == [] and rungs.records(1) == {}
    assert not (tmp_path / "none").exists()


def test_folders_are_private_and_records_are_the_users_alone(tmp_path: Path) -> None:
    Rungs(str(tmp_path / "rungs")).report(0, 0, 3, 1.0, asha(1.0, 3))
    for path, mode in [("rungs", 0o700), ("rungs/3", 0o700), ("rungs/3/0.json", 0o600)]:
        assert stat.S_IMODE(os.stat(tmp_path / path).st_mode) == mode, path


# -- once per (trial, milestone) -------------------------------------------------------------


def test_a_trial_reporting_again_gets_its_first_record(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    rungs = Rungs(folder)
    rungs.report(1, 0, 3, 0.9, asha(0.9, 3))
    first = rungs.report(0, 0, 3, 0.5, asha(0.5, 3))
    assert first.keep is False and first.earlier == 1
    assert rungs.report(0, 0, 3, 2.0, never) == first  # a better value now changes nothing
    assert Rungs(folder).report(0, 0, 3, 2.0, never) == first  # nor from another process
    assert names(tmp_path / "rungs" / "3") == ["0.json", "1.json"]


def test_a_requeued_attempt_gets_the_decision_of_attempt_0(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    first = Rungs(folder).report(7, 0, 9, 0.25, lambda earlier: (False, 0.5))
    again = Rungs(folder).report(7, 1, 9, 0.75, never)
    assert again == first and again.attempt == 0 and again.keep is False and again.value == 0.25


def test_a_decision_that_raises_writes_nothing(tmp_path: Path) -> None:
    rungs = Rungs(str(tmp_path / "rungs"))
    with pytest.raises(ZeroDivisionError):
        rungs.report(0, 0, 1, 1.0, lambda earlier: (bool(1 / 0), None))
    assert names(tmp_path / "rungs" / "1") == []
    assert rungs.report(0, 0, 1, 1.0, asha(1.0, 1)).keep is True


# -- concurrency -----------------------------------------------------------------------------

CONTEXT = multiprocessing.get_context("fork")  # the module's closures and state go along as they are


def _report_after(barrier: Any, queue: Any, folder: str, trial: int, attempt: int, value: float) -> None:
    draw = random.Random(trial).random  # forked children would share the parent's random state
    barrier.wait(timeout=60)
    time.sleep(draw() / 20)  # come in staggered, so that some see others and some do not

    def decide(earlier: list[float | None]) -> tuple[bool, float | None]:
        time.sleep(draw() / 50)  # between listing and linking: let others list meanwhile
        return ASHA3.keeps(value, earlier, "max", 3)

    queue.put(Rungs(folder).report(trial, attempt, 3, value, decide))


def _report_together(barrier: Any, queue: Any, folder: str, trial: int, attempt: int, value: float) -> None:
    def decide(earlier: list[float | None]) -> tuple[bool, float | None]:
        barrier.wait(timeout=60)  # nobody links before everybody has listed and decided
        return value > 0.5, value

    queue.put(Rungs(folder).report(trial, attempt, 3, value, decide))


def run_together(target: Any, folder: str, jobs: list[tuple[int, int, float]]) -> list[RungRecord]:
    """Run ``target`` for each (trial, attempt, value) in its own process, all released at once."""
    barrier, queue = CONTEXT.Barrier(len(jobs)), CONTEXT.Queue()
    processes = [CONTEXT.Process(target=target, args=(barrier, queue, folder, *job)) for job in jobs]
    for process in processes:
        process.start()
    records = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return records


def test_sixteen_trials_reporting_at_once_are_each_judged_on_what_came_before(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    values = {trial: (trial * 7 % 16) / 16 for trial in range(16)}
    jobs = [(trial, 0, value) for trial, value in values.items()]
    records = {record.trial: record for record in run_together(_report_after, folder, jobs)}
    assert names(tmp_path / "rungs" / "3") == sorted(f"{trial}.json" for trial in range(16))  # no temp left
    assert Rungs(folder).records(3) == records
    for record in records.values():
        assert record.value == values[record.trial] and record.earlier <= 15
        assert record.keep is (record.cutoff is None or record.value >= record.cutoff)  # mode "max"
        # A record counts only records linked before it listed the folder, hence decided (their
        # t) before it decided: the decisions agree with the order of their times. Which of
        # those it saw is not kept, but ASHA gives its decision for some `earlier` of them.
        before = [values[o] for o, other in records.items() if o != record.trial and other.t <= record.t]
        assert record.earlier <= len(before), record
        assert any(
            ASHA3.keeps(record.value, list(seen), "max", 3) == (record.keep, record.cutoff)
            for seen in itertools.combinations(before, record.earlier)
        ), record
    first = min(records.values(), key=lambda record: record.t)
    assert (first.earlier, first.keep, first.cutoff) == (0, True, None)  # the first to decide saw nobody


def test_eight_attempts_of_one_trial_at_once_make_one_record(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    records = run_together(_report_together, folder, [(5, attempt, attempt / 8) for attempt in range(8)])
    assert names(tmp_path / "rungs" / "3") == ["5.json"]
    assert all(record == records[0] for record in records)
    assert Rungs(folder).records(3) == {5: records[0]}
    winner = records[0]
    assert (winner.keep, winner.cutoff) == (winner.value > 0.5, winner.value)  # type: ignore[operator]
    assert winner.earlier == 0  # the other attempts' records were never made: not counted


# -- what is on disk -------------------------------------------------------------------------


def test_temporary_files_and_foreign_names_are_ignored(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    Rungs(folder).report(0, 0, 3, 0.5, asha(0.5, 3))
    rung = tmp_path / "rungs" / "3"
    (rung / ".1.4242.deadbeef0000.tmp").write_text('{"trial": 1, "half wri')  # a writer that crashed
    (rung / "01.json").write_text("not corral's")
    (rung / "notes.txt").write_text("")
    (tmp_path / "rungs" / ".9.1.ab.tmp").write_text("")
    record = Rungs(folder).report(1, 0, 3, 0.7, asha(0.7, 3))
    assert record.earlier == 1 and record.keep is True
    assert list(Rungs(folder).records(3)) == [0, 1]
    assert Rungs(folder).milestones() == [3]


def test_values_round_trip_exactly_and_nan_and_infinities_too(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    rungs = Rungs(folder)
    rungs.report(0, 0, 1, 0.1 + 0.2, lambda earlier: (True, 1 / 3))
    rungs.report(1, 2, 1, math.nan, lambda earlier: (False, math.inf))
    rungs.report(2, 0, 1, -math.inf, lambda earlier: (False, -math.inf))
    rungs.report(3, 0, 1, None, lambda earlier: (False, None))
    back = Rungs(folder).records(1)
    assert (back[0].value, back[0].cutoff) == (0.1 + 0.2, 1 / 3)
    assert math.isnan(back[1].value or 0.0) and back[1].cutoff == math.inf and back[1].attempt == 2
    assert (back[2].value, back[2].cutoff) == (-math.inf, -math.inf)
    assert (back[3].value, back[3].cutoff) == (None, None)
    assert json.loads((tmp_path / "rungs" / "1" / "1.json").read_text())["value"] == "nan"
    assert back[0] == rungs.records(1)[0] and back[0].t <= time.time()


def valid_record() -> dict[str, Any]:
    return {
        "trial": 4, "attempt": 0, "milestone": 1, "value": 0.5, "keep": True, "cutoff": None,
        "earlier": 2, "t": 1700000000.5,
    }  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"keep": "yes"},
        {"keep": 1},
        {"value": 1},  # corral writes floats as floats
        {"value": "NaN"},
        {"value": [0.5]},
        {"cutoff": True},
        {"trial": "4"},
        {"attempt": -1},
        {"attempt": 0.0},
        {"earlier": -1},
        {"earlier": 2.0},
        {"earlier": "2"},
        {"earlier": True},
        {"earlier": None},
        {"t": None},
        {"t": 1700000000},
        {"trial": 5},  # not the trial its name says
        {"milestone": 3},  # not the milestone its folder says
        {"extra": 1},
        {"seen": [1, 2]},  # what records held before earlier: the trials compared with, O(n) bytes
    ],
)
def test_a_record_corral_would_not_write_is_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    folder = tmp_path / "rungs"
    os.makedirs(folder / "1", mode=0o700)
    (folder / "1" / "4.json").write_text(json.dumps(valid_record() | change))
    with pytest.raises(FormatError) as caught:
        Rungs(str(folder)).records(1)
    assert caught.value.path == str(folder / "1" / "4.json")
    with pytest.raises(FormatError):
        Rungs(str(folder)).report(0, 0, 1, 0.5, never)


@pytest.mark.parametrize("text", [" ", "\n", "{", "[]", "null", '{"trial": 4}', "\xff"])
def test_a_record_that_is_not_one_is_refused(tmp_path: Path, text: str) -> None:
    os.makedirs(tmp_path / "rungs" / "1", mode=0o700)
    (tmp_path / "rungs" / "1" / "4.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(FormatError, match="is not a corral rung record"):
        Rungs(str(tmp_path / "rungs")).records(1)


def test_an_empty_record_a_host_crash_left_is_absent_until_its_trial_replaces_it(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    rung = tmp_path / "rungs" / "1"
    Rungs(folder).report(0, 0, 1, 0.5, asha(0.5, 1))
    (rung / "1.json").write_bytes(b"")  # linked, its content lost with the host
    reader = Rungs(folder)
    assert list(reader.records(1)) == [0]  # absent: not counted, not an error
    assert Rungs(folder).report(2, 0, 1, 0.7, asha(0.7, 1)).earlier == 1  # nor counted by others
    again = Rungs(folder).report(1, 1, 1, 0.9, asha(0.9, 1))  # the trial's requeued attempt
    assert (again.trial, again.attempt, again.value, again.keep, again.earlier) == (1, 1, 0.9, True, 2)
    assert names(rung) == ["0.json", "1.json", "2.json"]  # replaced in place, no temp left
    assert stat.S_IMODE(os.stat(rung / "1.json").st_mode) == 0o600
    assert Rungs(folder).records(1)[1] == again
    assert reader.records(1)[1] == again  # the reader that found it empty reads it now
    assert Rungs(folder).report(1, 2, 1, 0.1, never) == again  # from now on, it is the decision


def test_the_valid_record_of_these_tests_is_read() -> None:  # so the refusals above refuse one field
    record = RungRecord.from_json(json.dumps(valid_record()).encode(), "4.json")
    assert record.earlier == 2
    assert RungRecord.from_json(json.dumps(record.to_json()).encode(), "x") == record


@pytest.mark.parametrize("where", ["rungs", "rungs/3"])
def test_a_folder_others_can_write_is_refused(tmp_path: Path, where: str) -> None:
    os.makedirs(tmp_path / "rungs" / "3", mode=0o700)
    os.chmod(tmp_path / where, 0o777)
    with pytest.raises(UnsafeWorkDirError):
        Rungs(str(tmp_path / "rungs")).report(0, 0, 3, 0.5, never)
    with pytest.raises(UnsafeWorkDirError):
        Rungs(str(tmp_path / "rungs")).records(3)
    assert names(tmp_path / "rungs" / "3") == []


def test_a_milestone_folder_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "rungs", mode=0o700)
    os.makedirs(tmp_path / "elsewhere", mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "rungs" / "3")
    with pytest.raises(UnsafeWorkDirError, match="symbolic link"):
        Rungs(str(tmp_path / "rungs")).report(0, 0, 3, 0.5, never)


# -- the cache ------------------------------------------------------------------------------


class CountingRungs(Rungs):
    """Rungs that note every record file they read."""

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        self.loaded: list[str] = []

    def _load(self, path: str) -> bytes:
        self.loaded.append(os.path.basename(path))
        return super()._load(path)


def test_a_report_reads_only_the_records_it_has_not_read(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    writer = Rungs(folder)
    for trial in range(200):
        writer.report(trial, 0, 1, float(trial), lambda earlier: (True, None))
    reader = CountingRungs(folder)
    assert reader.report(200, 0, 1, 1.0, asha(1.0, 1)).earlier == 200
    assert sorted(reader.loaded) == sorted(f"{trial}.json" for trial in range(200))
    for trial in (201, 202, 203):
        writer.report(trial, 0, 1, float(trial), lambda earlier: (True, None))
    reader.loaded.clear()
    assert reader.report(204, 0, 1, 1.0, asha(1.0, 1)).earlier == 204
    assert sorted(reader.loaded) == ["201.json", "202.json", "203.json"]
    reader.loaded.clear()
    assert reader.report(200, 0, 1, 9.0, never).trial == 200 and reader.records(1)[204].trial == 204
    assert reader.loaded == []


def test_a_record_read_once_is_not_read_again(tmp_path: Path) -> None:
    folder = str(tmp_path / "rungs")
    rungs = Rungs(folder)
    rungs.report(0, 0, 1, 0.25, lambda earlier: (True, None))
    assert rungs.report(1, 0, 1, 0.5, asha(0.5, 1)).earlier == 1
    # Records never change, so one changed behind corral's back shows which read is cached.
    path = tmp_path / "rungs" / "1" / "0.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"value": 1e9}))
    earliers: list[list[float | None]] = []

    def decide(earlier: list[float | None]) -> tuple[bool, float | None]:
        earliers.append(earlier)
        return True, None

    rungs.report(2, 0, 1, 0.5, decide)
    assert earliers == [[0.25, 0.5]]
    assert Rungs(folder).records(1)[0].value == 1e9  # a fresh reader does see the change


def test_a_report_among_a_thousand_records_opens_only_its_own_and_records_do_not_grow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(tmp_path / "rungs")
    writer, reader = Rungs(folder), Rungs(folder)
    for trial in range(1000):
        writer.report(trial, 0, 1, 0.5, asha(0.5, 1))
    assert len(reader.records(1)) == 1000  # each read once, here
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, flags: int, mode: int = 0o777, **options: Any) -> int:
        opened.append(os.path.basename(path))
        return real_open(path, flags, mode, **options)

    monkeypatch.setattr(os, "open", counting_open)
    assert writer.report(1000, 0, 1, 0.5, asha(0.5, 1)).earlier == 1000
    assert len(opened) == 1 and opened[0].startswith(".1000.")  # its record, written aside and linked
    opened.clear()
    assert reader.report(1001, 0, 1, 0.5, asha(0.5, 1)).earlier == 1001
    assert opened[0] == "1000.json" and len(opened) == 2 and opened[1].startswith(".1001.")
    monkeypatch.undo()
    rung = tmp_path / "rungs" / "1"
    first, thousandth = os.path.getsize(rung / "0.json"), os.path.getsize(rung / "999.json")
    assert abs(thousandth - first) <= 8, (first, thousandth)  # digits of trial, earlier and t
