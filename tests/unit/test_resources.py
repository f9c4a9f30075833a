from datetime import timedelta

import pytest

from corral import ResourceError, Resources
from corral.resources import parse_memory, parse_time


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
