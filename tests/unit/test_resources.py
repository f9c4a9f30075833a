from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from corral import Cluster, Executor, Request, ResourceError, Resources
from corral.backends import sge_text, slurm_text
from corral.backends.base import ArraySpec
from corral.backends.sge import SgeBackend
from corral.backends.slurm import SlurmBackend
from corral.errors import job_error
from corral.job import JobState
from corral.resources import MAX_MEMORY_MB, MAX_TIME, check_max_running, parse_memory, parse_time
from corral.retry import RetryPolicy
from corral.transports.local import LocalTransport

from .fakes import FakeSlurm


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", timedelta(minutes=30)),
        ("1:30", timedelta(minutes=1, seconds=30)),
        ("1:30:00", timedelta(hours=1, minutes=30)),
        ("2-00", timedelta(days=2)),
        ("2-03:04", timedelta(days=2, hours=3, minutes=4)),
        ("2-03:04:05", timedelta(days=2, hours=3, minutes=4, seconds=5)),
        (15, timedelta(minutes=15)),
        (timedelta(seconds=7), timedelta(seconds=7)),
    ],
)
def test_time_forms(text: object, expected: timedelta) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("bad", ["soon", "1:2:3:4", -5, 0, "0", 1.5, True])
def test_bad_time_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ResourceError, match="time="):
        parse_time(bad)


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("4G", 4096),
        ("512M", 512),
        ("512MB", 512),
        ("1.5g", 1536),
        (100, 100),
        ("2T", 2 * 1024 * 1024),
        ("1024K", 1),
    ],
)
def test_memory_forms(text: object, mb: int) -> None:
    assert parse_memory(text) == mb


def test_unknown_option_names_the_key_and_suggests() -> None:
    with pytest.raises(ResourceError, match=r"unknown resource option 'memroy'; did you mean 'memory'"):
        Resources.from_options(memroy="4G")


@pytest.mark.parametrize(
    "options",
    [
        {"cpus": 0},
        {"cpus": "2"},
        {"nodes": -1},
        {"partition": "a b"},
        {"partition": "x;rm -rf /"},
        {"job_name": "$(whoami)"},
        {"gpus": "two"},
        {"memory": "lots"},
        {"extra": {"--mail-type": "END"}},
        {"extra": {"array": "0-3"}},
        {"extra": {"comment": "has spaces"}},
        {"extra": ["mail-type"]},
    ],
)
def test_malformed_options_fail_before_submission(options: dict[str, object]) -> None:
    with pytest.raises(ResourceError):
        Resources.from_options(**options)


def test_friendly_forms_become_typed_values() -> None:
    res = Resources.from_options(
        time="1:00:00", memory="2G", gpus=2, cpus=4, extra={"exclusive": None, "mail-type": "END"}
    )
    assert res.time == timedelta(hours=1)
    assert res.memory == 2048
    assert res.gpus == "2"
    assert res.extra == (("exclusive", None), ("mail-type", "END"))


def test_merged_lays_new_options_over_old_without_changing_them() -> None:
    base = Resources.from_options(cpus=2, partition="a")
    merged = base.merged(partition="b", time=5)
    assert (merged.cpus, merged.partition, merged.time) == (2, "b", timedelta(minutes=5))
    assert base.partition == "a"


# -- bounds, control characters, booleans and abbreviations (issue 11, item 6) -----------------


@pytest.mark.parametrize("bad", ["99999999999999", 10**14, "366-00:00:00", 525601, timedelta(days=400)])
def test_a_time_above_a_year_is_a_resource_error_naming_the_bound(bad: object) -> None:
    with pytest.raises(ResourceError, match="more than 365 days"):
        Resources.from_options(time=bad)


def test_a_year_is_the_longest_time_and_is_accepted() -> None:
    assert Resources.from_options(time="365-00:00:00").time == MAX_TIME
    assert Resources.from_options(time=525600).time == MAX_TIME


def test_resources_built_directly_are_bounded_too() -> None:
    with pytest.raises(ResourceError, match="more than 365 days"):
        Resources(time=timedelta(days=366))
    with pytest.raises(ResourceError, match="1 PB"):
        Resources(memory=MAX_MEMORY_MB + 1)
    with pytest.raises(ResourceError, match="must be a timedelta"):
        Resources(time=60)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [MAX_MEMORY_MB + 1, "2048T", "9" * 400, "9" * 400 + "G"])
def test_memory_above_a_petabyte_is_a_resource_error_naming_the_bound(bad: object) -> None:
    with pytest.raises(ResourceError, match=r"more than 1 PB \(1073741824 MB\)"):
        Resources.from_options(memory=bad)


def test_a_petabyte_is_accepted() -> None:
    assert Resources.from_options(memory="1024T").memory == MAX_MEMORY_MB


@pytest.mark.parametrize("char", ["\0", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\ud800"])
@pytest.mark.parametrize("field", ["partition", "account", "qos", "constraint", "job_name"])
def test_control_characters_in_text_fields_are_refused(field: str, char: str) -> None:
    with pytest.raises(ResourceError, match=f"{field}=.*control character"):
        Resources.from_options(**{field: f"gpu{char}x"})


@pytest.mark.parametrize("char", ["\0", "\n", "\x1b", "\u2029"])
def test_control_characters_in_extra_values_are_refused(char: str) -> None:
    with pytest.raises(ResourceError, match="extra option mail-user=.*control character"):
        Resources.from_options(extra={"mail-user": f"me{char}@lab.org"})


def test_extra_true_is_the_bare_flag_and_false_leaves_the_option_out() -> None:
    res = Resources.from_options(
        extra={"exclusive": True, "requeue-ok": False, "mail-type": "END", "nice": 5}
    )
    assert res.extra == (("exclusive", None), ("mail-type", "END"), ("nice", "5"))
    assert Resources.from_options(extra={"exclusive": False}).extra == ()


def test_extra_values_that_are_not_text_are_refused_when_built_directly() -> None:
    with pytest.raises(ResourceError, match="must be text"):
        Resources(extra=(("exclusive", False),))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, 1, 3])
def test_max_running_accepts_none_and_positive_whole_numbers(value: int | None) -> None:
    assert check_max_running(value) == value


@pytest.mark.parametrize("bad", ["3", 0, -1, 2.0, True])
def test_max_running_of_another_type_is_a_resource_error_naming_it(bad: object) -> None:
    with pytest.raises(ResourceError, match=r"max_running=.* must be a whole number"):
        check_max_running(bad)
    with pytest.raises(ResourceError, match=r"processes=.* must be a whole number"):
        check_max_running(bad, "processes")


@pytest.mark.parametrize(
    ("key", "option"),
    [("arr", "array"), ("dep", "dependency"), ("out", "output"), ("j", "job-name"),
     ("kill-on", "kill-on-invalid-dep"), ("expo", "export"), ("par", "parsable")],
)  # fmt: skip
def test_slurm_refuses_extra_options_that_abbreviate_a_reserved_one(key: str, option: str) -> None:
    res = Resources.from_options(extra={key: "x"})  # SGE may take it: qsub does not abbreviate
    with pytest.raises(ResourceError, match=f"extra option '{key}' abbreviates '{option}'"):
        slurm_text.check_resources(res)
    with pytest.raises(ResourceError, match=f"'{key}' abbreviates"):
        slurm_text.sbatch_options(spec(res))


def test_slurm_takes_extra_options_that_abbreviate_nothing_reserved() -> None:
    res = Resources.from_options(extra={"mail-type": "END", "mem-per-cpu": "2G", "time-min": "10"})
    slurm_text.check_resources(res)
    assert "--mem-per-cpu=2G" in slurm_text.sbatch_options(spec(res))


def test_sge_takes_its_own_short_options_that_look_like_sbatch_prefixes() -> None:
    res = Resources.from_options(extra={"ar": "12", "m": "bea", "p": "-5"})
    sge_text.check_resources(res)
    assert "-ar 12" in sge_text.qsub_options(spec(res))


def test_a_bad_extra_option_is_refused_before_the_batch_folder_exists(tmp_path: Path) -> None:
    work = tmp_path / "work"
    cluster = Cluster(SlurmBackend(FakeSlurm(run_jobs=False)), str(work))
    try:
        with pytest.raises(ResourceError, match="'arr' abbreviates 'array'"):
            cluster.submit(
                Request(fn=abs, calls=[((1,), {})], resources=Resources.from_options(extra={"arr": "0-99"}))
            )
    finally:
        cluster.close()
    assert not work.exists() or not any(work.iterdir())


def test_what_sge_cannot_express_is_refused_before_the_batch_folder_exists(tmp_path: Path) -> None:
    work = tmp_path / "work"
    cluster = Cluster(SgeBackend(LocalTransport()), str(work))
    try:
        with pytest.raises(ResourceError, match="cannot be expressed on SGE"):
            cluster.submit(Request(fn=abs, calls=[((1,), {})], resources=Resources.from_options(gpus=1)))
    finally:
        cluster.close()
    assert not work.exists() or not any(work.iterdir())


def test_bad_values_fail_in_the_executor_before_anything_is_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for options in ({"time": 10**14}, {"memory": "2048T"}, {"partition": "a\0b"}, {"extra": {"x": "a\nb"}}):
        with pytest.raises(ResourceError):
            Executor(backend="local", directory=str(work), **options)
    assert not work.exists()


def spec(resources: Resources) -> ArraySpec:
    return ArraySpec(
        batch_dir="/w/.corral/f-1", sub=0, elements=2, resources=resources, job_name="corral-f",
        python="/usr/bin/python3", chdir="/w",
    )  # fmt: skip


def test_a_retry_that_asks_for_more_stops_at_the_bounds() -> None:
    """time_factor/memory_factor grow the resources of a retry; past the bounds Resources would
    raise inside the engine's poll loop, so the retry asks for the bound instead."""
    big = Resources(time=timedelta(days=300), memory=MAX_MEMORY_MB // 2 + 1)
    timeout = job_error(JobState.TIMEOUT, job_id="1_0", call=0, batch="b")
    oom = job_error(JobState.OUT_OF_MEMORY, job_id="1_0", call=0, batch="b")
    assert RetryPolicy(time_factor=2).next_resources(timeout, 1, big) == replace(big, time=MAX_TIME)
    assert RetryPolicy(memory_factor=2).next_resources(oom, 1, big) == replace(big, memory=MAX_MEMORY_MB)
