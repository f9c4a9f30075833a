"""The early-stopping rules of corral.frontends.sweep.schedulers, as decision tables: ASHA
with eta=3 (milestones 1, 3, 9, 27, 81) and the median rule, in both modes."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Sequence
from fractions import Fraction

import pytest

from corral.frontends.sweep.schedulers import ASHA, Median, Mode, Scheduler, check_mode, quantile

NAN = math.nan
ASHA3 = ASHA(min_t=1, max_t=81, eta=3)
ONE_TO_TEN = [float(v) for v in range(1, 11)]


def reports(scheduler: Scheduler, steps: Sequence[float]) -> list[int | None]:
    """What each step reports at, for a trial that logs ``steps`` in turn."""
    reported: list[int] = []
    found = []
    for step in steps:
        milestone = scheduler.milestone(step, reported)
        if milestone is not None:
            reported.append(milestone)
        found.append(milestone)
    return found


# -- milestones ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler, milestones",
    [
        (ASHA(1, 81, 3), (1, 3, 9, 27, 81)),
        (ASHA(1, 100, 3), (1, 3, 9, 27, 81, 100)),
        (ASHA(2, 20, 2), (2, 4, 8, 16, 20)),
        (ASHA(5, 6, 3), (5, 6)),
        (ASHA(), (1, 3, 9, 27, 81, 100)),
    ],
)
def test_asha_milestones_grow_by_eta_up_to_max_t(scheduler: ASHA, milestones: tuple[int, ...]) -> None:
    assert scheduler.milestones == milestones


@pytest.mark.parametrize(
    "steps, expected",
    [
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [None, 1, None, 3, None, None, None, None, None, 9, None]),
        ([2, 10, 11, 27], [1, 9, None, 27]),  # a jump from 2 to 10 reports at 9 only, never at 3
        ([9, 9, 9], [9, None, None]),  # reported once, whatever the repeats
        ([0.5, 2.5, 3.0, 8.999], [None, 1, 3, None]),  # fractional steps count as reached below them
        ([100, 200], [81, None]),  # beyond max_t: max_t, once
        ([-3, 0], [None, None]),
    ],
)
def test_asha_reports_at_the_highest_milestone(steps: list[float], expected: list[int | None]) -> None:
    assert reports(ASHA3, steps) == expected


def test_asha_milestone_follows_ray_for_a_step_below_a_reported_one() -> None:
    # Only the highest milestone <= step matters: 3 was jumped over, a later step 5 reports there.
    assert ASHA3.milestone(5, [9]) == 3
    assert ASHA3.milestone(10, [9]) is None
    assert ASHA3.milestone(30, [9]) == 27


def test_asha_reports_at_max_t_when_it_is_not_a_power() -> None:
    assert reports(ASHA(1, 100, 3), [99, 100, 150]) == [81, 100, None]


@pytest.mark.parametrize("step", [NAN, math.inf, -math.inf, "3", True, None])
def test_a_step_must_be_a_finite_number(step: object) -> None:
    for scheduler in (ASHA3, Median()):
        with pytest.raises(ValueError, match="step must be a finite number"):
            scheduler.milestone(step, [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "scheduler, steps, expected",
    [
        (Median(), [0, 1, 2, 2, 3.7, 10], [None, 1, 2, None, 3, 10]),
        (
            Median(warmup=10, interval=5),
            [9, 14, 15, 19, 20, 37, 39, 40],
            [None, None, 15, None, 20, 35, None, 40],
        ),
        (Median(warmup=0, interval=4), [3, 4, 7, 8, 100], [None, 4, None, 8, 100]),
    ],
)
def test_median_milestones_come_every_interval_after_warmup(
    scheduler: Median, steps: list[float], expected: list[int | None]
) -> None:
    assert reports(scheduler, steps) == expected


# -- ASHA's decisions ----------------------------------------------------------------------

FIVE = [0.1, 0.7, 0.3, 0.5, 0.2]  # beside these n=6: one may be better than the trial
TWENTY_SIX = [float(v) for v in range(1, 27)]  # n=27: eight may be better

ASHA_TABLE: list[tuple[Mode, float | None, list[float | None], bool, float | None]] = [
    # mode, own value, earlier values, continues, cutoff (the max(1, n // 3)-th best of the n)
    ("max", 0.1, [], True, None),  # first at the rung: no company, never pruned for it
    ("max", 0.4, [0.5], False, 0.5),  # n=2: it must be the best
    ("max", 0.5, [0.5], True, 0.5),  # a tie goes to the trial
    ("max", 0.6, [0.5], True, 0.6),  # the best: the value it had to match is its own
    ("max", 0.5, [0.2, 0.8], False, 0.8),  # second of three is pruned (Ray's quantile kept it)
    ("max", 0.9, [0.8, 0.2], True, 0.9),
    ("max", 0.8, [0.8, 0.2], True, 0.8),
    ("max", 0.65, [0.1, 0.7, 0.3, 0.5], False, 0.7),  # n=5: still the best or nothing
    ("max", 0.6, FIVE, True, 0.6),  # n=6: second, behind 0.7, continues
    ("max", 0.5, FIVE, True, 0.5),  # second, tied with 0.5
    ("max", 0.4, FIVE, False, 0.5),  # third
    ("max", 0.5, [0.9, 0.5, 0.5, 0.5, 0.5], True, 0.5),  # one better, the ties go to it
    ("max", 0.5, [0.9, 0.8, 0.5, 0.5, 0.5], False, 0.8),  # two better
    ("max", 8.0, [*ONE_TO_TEN], True, 8.0),  # n=11: third, behind 9 and 10
    ("max", 7.99, [*ONE_TO_TEN], False, 8.0),
    ("max", 18.0, TWENTY_SIX, True, 18.0),  # n=27: ninth, behind 19..26
    ("max", 17.5, TWENTY_SIX, False, 18.0),  # tenth
    ("max", 0.5, [0.5, 0.5, 0.5], True, 0.5),
    ("max", 0.49, [0.5, 0.5, 0.5], False, 0.5),
    ("max", 0.45, [0.5, NAN, 0.4], False, 0.5),  # NaN earlier: left out, n=3
    ("max", 0.55, [0.5, None, 0.4], True, 0.55),
    ("max", 0.6, [0.7, NAN, NAN, None, 0.1], False, 0.7),  # n=3, not 6: 0.7 alone beats it
    ("max", 0.1, [NAN, None], True, None),  # no numbers earlier: no company
    ("max", NAN, [0.5], False, 0.5),  # a NaN of its own is worse than anything
    ("max", None, [0.5], False, 0.5),
    ("max", NAN, FIVE, False, 0.5),  # the 2nd best of the six, its own last
    ("max", NAN, [], True, None),  # ... but not pruned without company
    ("max", None, [None, NAN], True, None),
    ("max", -math.inf, [1.0], False, 1.0),
    ("max", math.inf, [1.0, 2.0], True, math.inf),
    ("min", 0.6, [], True, None),
    ("min", 0.6, [0.5], False, 0.5),
    ("min", 0.5, [0.5], True, 0.5),
    ("min", 0.4, [0.5], True, 0.4),
    ("min", 0.5, [0.2, 0.8], False, 0.2),  # second of three
    ("min", 0.1, [0.8, 0.2], True, 0.1),
    ("min", 0.15, FIVE, True, 0.15),  # second, behind 0.1
    ("min", 0.2, FIVE, True, 0.2),  # second, tied with 0.2
    ("min", 0.4, FIVE, False, 0.2),  # fourth, behind 0.1, 0.2 and 0.3
    ("min", 3.0, [*ONE_TO_TEN], True, 3.0),  # third, behind 1 and 2
    ("min", 3.01, [*ONE_TO_TEN], False, 3.0),
    ("min", 9.0, TWENTY_SIX, True, 9.0),  # ninth, behind 1..8
    ("min", 9.5, TWENTY_SIX, False, 9.0),
    ("min", 0.45, [0.5, NAN, 0.4], False, 0.4),
    ("min", 0.35, [0.5, None, 0.4], True, 0.35),
    ("min", NAN, [0.5], False, 0.5),
    ("min", NAN, FIVE, False, 0.2),
    ("min", None, [], True, None),
    ("min", math.inf, [1.0], False, 1.0),
    ("min", -math.inf, [1.0, 2.0], True, -math.inf),
]


@pytest.mark.parametrize("mode, value, earlier, keep, cutoff", ASHA_TABLE)
def test_asha_keeps_the_top_third_counting_the_trial(
    mode: Mode, value: float | None, earlier: list[float | None], keep: bool, cutoff: float | None
) -> None:
    for milestone in (1, 3, 9, 27):  # the same rule at every rung below max_t
        assert ASHA3.keeps(value, earlier, mode, milestone) == (keep, cutoff)


@pytest.mark.parametrize("mode, value, earlier, keep, cutoff", ASHA_TABLE)
def test_asha_prunes_nothing_at_max_t(
    mode: Mode, value: float | None, earlier: list[float | None], keep: bool, cutoff: float | None
) -> None:
    assert ASHA3.keeps(value, earlier, mode, 81) == (True, None)


@pytest.mark.parametrize("mode, value, earlier, keep, cutoff", ASHA_TABLE)
def test_asha_keeps_a_trial_iff_it_is_at_least_as_good_as_its_cutoff(
    mode: Mode, value: float | None, earlier: list[float | None], keep: bool, cutoff: float | None
) -> None:
    # What makes a record checkable afterwards from its value and cutoff alone.
    if cutoff is not None:
        number = value is not None and not math.isnan(value)
        assert keep is (number and (value >= cutoff if mode == "max" else value <= cutoff))  # type: ignore[operator]


def test_asha_with_eta_2_keeps_the_top_half() -> None:
    asha = ASHA(1, 8, 2)
    assert asha.keeps(1.0, [2.0], "max", 4) == (False, 2.0)  # n=2: the best or nothing
    assert asha.keeps(2.0, [1.0, 2.0, 3.0], "max", 4) == (True, 2.0)  # n=4: one may be better
    assert asha.keeps(1.9, [1.0, 2.0, 3.0], "max", 4) == (False, 2.0)
    assert asha.keeps(2.1, [1.0, 2.0, 3.0], "min", 4) == (False, 2.0)


def test_asha_refuses_a_milestone_it_does_not_have_and_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="5 is not a milestone"):
        ASHA3.keeps(1.0, [], "max", 5)
    with pytest.raises(ValueError, match="mode must be"):
        ASHA3.keeps(1.0, [], "maximize", 3)  # type: ignore[arg-type]


# -- the median rule -----------------------------------------------------------------------

MEDIAN_TABLE: list[tuple[Mode, float | None, list[float | None], bool, float | None]] = [
    ("max", -100.0, [1.0, 2.0], True, None),  # fewer than min_trials=3 numbers: no judgement
    ("max", NAN, [1.0, 2.0, NAN, None], True, None),  # NaN and None do not count as trials
    ("max", 2.0, [1.0, 2.0, 3.0], True, 2.0),
    ("max", 1.9, [3.0, 1.0, 2.0], False, 2.0),
    ("max", 2.5, [1.0, 2.0, 3.0, 10.0], True, 2.5),  # an even count: the mean of the middle two
    ("max", 2.4, [1.0, 2.0, 3.0, 10.0], False, 2.5),
    ("max", NAN, [1.0, 2.0, 3.0], False, 2.0),
    ("min", 2.0, [1.0, 2.0, 3.0], True, 2.0),
    ("min", 2.1, [1.0, 2.0, 3.0], False, 2.0),
    ("min", 2.4, [1.0, 2.0, 3.0, 10.0], True, 2.5),
    ("min", 100.0, [1.0, None, 2.0], True, None),
    ("min", None, [1.0, 2.0, 3.0], False, 2.0),
]


@pytest.mark.parametrize("mode, value, earlier, keep, cutoff", MEDIAN_TABLE)
def test_median_keeps_trials_at_least_as_good_as_the_median(
    mode: Mode, value: float | None, earlier: list[float | None], keep: bool, cutoff: float | None
) -> None:
    median = Median(warmup=10, interval=5, min_trials=3)
    for milestone in (15, 20, 1000):
        assert median.keeps(value, earlier, mode, milestone) == (keep, cutoff)


@pytest.mark.parametrize("milestone", [10, 17, 5, 0, 15.0, True])
def test_median_refuses_a_milestone_it_does_not_have(milestone: object) -> None:
    with pytest.raises(ValueError, match="is not a milestone"):
        Median(warmup=10, interval=5).keeps(1.0, [], "max", milestone)  # type: ignore[arg-type]


# -- quantile ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, q, expected",
    [  # numpy.percentile(values, 100 * q), worked out by hand
        ([1, 2, 3, 4], 0.5, 2.5),
        ([10, 20, 30], 0.25, 15.0),
        ([0, 10, 20, 30, 40], 0.9, 36.0),
        ([3, 1, 2], 2 / 3, 2.3333333333333335),
        ([1, 5], 2 / 3, 3.6666666666666665),
        ([1, 5], 1 / 3, 2.3333333333333335),
        ([7], 0.3, 7.0),
        ([5, 1, 4], 0, 1.0),
        ([5, 1, 4], 1, 5.0),
        ([-2.5, 0.5, 1.0, 4.0], 0.75, 1.75),
        ([1, 2, math.inf], 0.25, 1.5),
    ],
)
def test_quantile_interpolates_like_numpy(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    "values, q, expected",
    [  # numpy says NaN for all but the first; a cutoff of NaN would prune every trial
        ([1, math.inf], 0.25, math.inf),
        ([1, math.inf], 0.5, math.inf),
        ([-math.inf, 1], 0.75, -math.inf),
        ([-math.inf, math.inf], 0.25, -math.inf),
        ([-math.inf, math.inf], 0.5, math.inf),
        ([math.inf, math.inf], 0.5, math.inf),
    ],
)
def test_quantile_between_infinities_is_an_infinity(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == expected


def test_quantile_of_a_fraction_uses_the_exact_rank() -> None:
    assert quantile(ONE_TO_TEN, Fraction(2, 3)) == 7.0
    assert quantile(ONE_TO_TEN, Fraction(1, 3)) == 4.0
    values = [0.3, -1.0, 2.5, 8.0, 0.0, 4.25, 1.5]
    for q in (Fraction(1, 3), Fraction(1, 4), Fraction(1, 5)):  # min mode mirrors max mode
        assert quantile(values, q) == pytest.approx(-quantile([-v for v in values], 1 - q), rel=1e-15)


@pytest.mark.parametrize("values, q", [([], 0.5), ([1.0], 1.5), ([1.0], -0.1), ([1.0, NAN], 0.5)])
def test_quantile_refuses_what_has_none(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        quantile(values, q)


# -- validation and description ------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"min_t": 0}, "min_t must be a whole number >= 1, not 0"),
        ({"min_t": 1.0}, "min_t must be a whole number >= 1, not 1.0"),
        ({"min_t": True}, "min_t must be a whole number >= 1, not True"),
        ({"min_t": 9, "max_t": 9}, r"max_t must be a whole number above min_t \(9\), not 9"),
        ({"max_t": "81"}, "max_t must be a whole number above min_t \\(1\\), not '81'"),
        ({"eta": 1}, "eta must be a whole number >= 2, not 1"),
        ({"eta": 2.5}, "eta must be a whole number >= 2, not 2.5"),
    ],
)
def test_asha_refuses_bad_settings(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ASHA(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"warmup": -1}, "warmup must be a whole number >= 0, not -1"),
        ({"interval": 0}, "interval must be a whole number >= 1, not 0"),
        ({"interval": 2.0}, "interval must be a whole number >= 1, not 2.0"),
        ({"min_trials": 0}, "min_trials must be a whole number >= 1, not 0"),
        ({"min_trials": False}, "min_trials must be a whole number >= 1, not False"),
    ],
)
def test_median_refuses_bad_settings(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Median(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_check_mode_takes_min_and_max(mode: str) -> None:
    assert check_mode(mode) == mode


@pytest.mark.parametrize("mode", ["MAX", "maximize", None, 1, b"max"])
def test_check_mode_refuses_anything_else(mode: object) -> None:
    with pytest.raises(ValueError, match='mode must be "min" or "max"'):
        check_mode(mode)


def test_schedulers_describe_themselves_and_travel_to_nodes() -> None:
    assert ASHA3.describe() == {"scheduler": "asha", "min_t": 1, "max_t": 81, "eta": 3}
    median = Median(warmup=10, interval=5, min_trials=3)
    assert median.describe() == {"scheduler": "median", "warmup": 10, "interval": 5, "min_trials": 3}
    for scheduler in (ASHA3, median):
        assert isinstance(scheduler, Scheduler)
        assert json.loads(json.dumps(scheduler.describe())) == scheduler.describe()
        copy = pickle.loads(pickle.dumps(scheduler))
        assert copy == scheduler and reports(copy, [1, 16, 100]) == reports(scheduler, [1, 16, 100])
