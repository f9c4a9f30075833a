"""A sweep on the real SGE test cell: the same trials, pruning and results as anywhere."""

from __future__ import annotations

import os

from corral import sweep


def curve(config: dict[str, float]) -> float:
    loss = 0.0
    for epoch in range(1, 10):
        loss = config["q"] + 1.0 / epoch
        sweep.log(epoch, loss=loss, job=os.environ["JOB_ID"])  # set by SGE in every job
    return loss


def test_a_sweep_prunes_and_finds_the_best_on_sge(workdir: str) -> None:
    s = sweep.Sweep(
        curve, {"q": sweep.grid([0.5, 0.3, 0.9, 0.0, 0.7, 0.2])}, metric="loss", backend="sge",
        directory=workdir, scheduler=sweep.ASHA(min_t=1, max_t=9), max_running=3, progress=False,
    )  # fmt: skip
    result = s.run()
    assert result.best().config == {"q": 0.0} and result.best().step == 9
    assert {t.status for t in result.trials} == {"completed", "pruned"}
    assert by(result, 0.9).status == "pruned"  # worse than all before it, at the first milestone
    assert len({t.metrics["job"] for t in result.trials}) == 1  # one array job: elements pull trials


def by(result: sweep.SweepResult, q: float) -> sweep.Trial:
    return next(t for t in result.trials if t.config["q"] == q)
