from corral.backends.base import Limits
from corral.engine.planning import element_of_call, plan_batch

EIGHT = Limits(max_array_size=1001, max_submit_jobs=None, slots=8)


def test_default_packing_pulls_with_one_element_per_slot() -> None:
    plans = plan_batch(1000, EIGHT)
    assert [(p.mode, p.elements, p.total_elements) for p in plans] == [("pull", 8, 8)]
    assert len(plans[0].worker_plan().tasks) == 1000


def test_few_calls_get_no_more_elements_than_calls() -> None:
    assert plan_batch(1, EIGHT)[0].elements == 1
    assert plan_batch(3, EIGHT)[0].elements == 3


def test_max_running_caps_pull_elements() -> None:
    assert plan_batch(100, EIGHT, max_running=3)[0].elements == 3


def test_chunksize_packs_statically_and_splits_at_max_array_size() -> None:
    limits = Limits(max_array_size=4, max_submit_jobs=None, slots=8)
    plans = plan_batch(10, limits, chunksize=1)
    assert [(p.elements, p.calls()) for p in plans] == [(4, range(0, 4)), (4, range(4, 8)), (2, range(8, 10))]
    chunked = plan_batch(10, limits, chunksize=3)
    assert [p.elements for p in chunked] == [4]
    assert element_of_call(chunked[0], 7) == 2


def test_a_pull_batch_split_at_max_array_size_shares_its_calls_by_elements() -> None:
    # Elements claim chunks of their own submission's task list, so the submissions of a
    # split batch each get calls of their own, in proportion to their elements.
    limits = Limits(max_array_size=3, max_submit_jobs=None, slots=8)
    plans = plan_batch(100, limits)
    assert [(p.elements, p.ranges) for p in plans] == [
        (3, ((0, 37, 0),)),
        (3, ((37, 75, 0),)),
        (2, ((75, 100, 0),)),
    ]


def test_max_submit_jobs_bounds_each_submission() -> None:
    limits = Limits(max_array_size=1001, max_submit_jobs=5, slots=100)
    assert [p.elements for p in plan_batch(12, limits, chunksize=1)] == [5, 5, 2]
