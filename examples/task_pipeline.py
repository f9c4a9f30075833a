"""A benchmark pipeline with @corral.task: prepare, 100 runs in batches of 20, clean up.

The jobs are chained by the scheduler itself: this script submits everything and exits at
once, and the work goes on without it. With no cluster here the same script runs the jobs
as local processes, in the same order, and waits for them before it exits. Run it with:

    python examples/task_pipeline.py [OUTPUT_DIR]

Each step writes a small JSON record (with its start and end times) to OUTPUT_DIR
(default ./pipeline-out); clean_up writes summary.json once every run is done.
"""

import json
import os
import sys
import time

import corral


def record(out_dir: str, name: str, **values: object) -> None:
    """Write one step's record atomically, so that a reader never sees half of it."""
    path = os.path.join(out_dir, f"{name}.json")
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("CORRAL_ELEMENT_ID")  # SLURM's, or local
    with open(path + ".tmp", "w") as handle:
        json.dump({**values, "job": job}, handle)
    os.replace(path + ".tmp", path)


@corral.task(time="0:05:00")
def prepare(out_dir: str) -> None:
    """Make the instances every run reads."""
    start = time.time()
    with open(os.path.join(out_dir, "instances.json"), "w") as handle:
        json.dump([3 * i + 1 for i in range(100)], handle)
    time.sleep(1)  # so that a run started too early would show
    record(out_dir, "prepare", start=start, end=time.time())


@corral.task(time="0:05:00")
def run(out_dir: str, i: int) -> None:
    """Solve instance ``i`` (here: a sum of squares) and record the result."""
    start = time.time()
    with open(os.path.join(out_dir, "instances.json")) as handle:
        size = json.load(handle)[i]
    record(out_dir, f"run-{i:03d}", start=start, end=time.time(), result=sum(k * k for k in range(size)))


@corral.task(time="0:05:00")
def clean_up(out_dir: str) -> None:
    """Merge the records of every run into one summary."""
    start = time.time()
    results = {}
    for i in range(100):
        with open(os.path.join(out_dir, f"run-{i:03d}.json")) as handle:
            results[i] = json.load(handle)["result"]
    record(out_dir, "summary", start=start, end=time.time(), results=results)


if __name__ == "__main__":
    out_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "pipeline-out")
    os.makedirs(out_dir, exist_ok=True)

    prep = prepare.distribute(out_dir)
    with corral.Batch(max_size=20) as batch:  # 100 calls -> 5 jobs of 20
        for i in range(100):
            run.after(prep).distribute(out_dir, i)
        runs = batch.flush()  # every ref now has a job id
        clean_up.after(*runs).distribute(out_dir)

    jobs = sorted({ref.job_id for ref in runs}, key=str)
    print(f"submitted: prepare {prep.job_id}, runs in {len(jobs)} jobs ({', '.join(map(str, jobs))})")
