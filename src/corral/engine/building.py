"""A request written down: the batch folder, its calls and plans, and the batch that tracks
it, before anything reaches the scheduler (see :meth:`corral.engine.cluster.Cluster.submit`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

from ..backends.base import Backend, Submission
from ..environment import Environment
from ..resources import Resources
from ..store.batch import BatchStore
from ..store.pickling import Blobs
from ..store.protocol import WorkerOptions
from . import budget
from .futures import CorralFuture
from .planning import Plan, plan_batch
from .request import Request
from .submitting import array_specs, log_pattern, pack_engine, pickle_calls, probes
from .tracking import BatchState, Owner, SubState


def build_batch(
    request: Request,
    backend: Backend,
    root: str,
    owner: Owner,
    futures: list[CorralFuture] | None = None,
    python: str | None = None,
    chdir: str | None = None,
) -> BatchState:
    """Charge the request's budget, pickle its calls, plan its arrays for ``backend``'s
    limits, and write it all to a new batch folder under ``root``: everything that can fail
    before the scheduler sees the batch fails here. ``futures``: a burst's pending ones;
    ``python``: the nodes' interpreter unless the request's environment names one (default:
    this process's); ``chdir``: where the jobs run, in place of the request's own."""
    python = request.environment.python or python or sys.executable
    ranks = backend.ranks(request.environment, request.resources, python)  # refused before writing
    budget.charge(request.budget, request.what)
    if request.payloads is None:
        shared = Blobs()  # a big value given to many calls is written once
        function, payloads = pickle_calls(request.fn, request.calls, shared)
        blobs: Mapping[str, bytes] = shared.data
    else:
        function, payloads = pickle_calls(request.fn, [])[0], list(request.payloads)
        blobs = request.blobs
    resources, max_running = request.resources, request.max_running
    limits = backend.limits(resources)
    plans = plan_batch(len(payloads), limits, chunksize=request.chunksize, max_running=max_running)
    name = request.batch_name
    store = BatchStore.create(root, name, backend.transport)
    manifest: dict[str, object] = {
        "function": name, "calls": len(payloads), "backend": backend.name, "created": time.time(),
    }  # fmt: skip
    if backend.clusters:  # which cluster's job ids these are: attach asks that one (-M)
        manifest["clusters"] = backend.clusters
    store.write_batch(manifest, function, payloads, blobs)
    options = WorkerOptions(
        strict=request.strict, stdin=request.command is not None,
        requeue=backend.requeue, restart_env=backend.restart_env, ranks=ranks,
    )  # fmt: skip
    batch = BatchState(
        store, len(payloads), [], owner, request.retry, name=name, max_running=max_running,
        needs=request.needs, worker_options=options, explain=backend.explain_end, futures=futures,
        echo=request.echo,
    )  # fmt: skip
    store.write_engine(pack_engine(name, max_running, batch.retry, options))
    probing = probes(plans)
    specs = array_specs(
        plans, store.path, name, resources, max_running, request.command, chdir or request.chdir,
        python=python, environment=request.environment,
    )  # fmt: skip
    for plan, spec in zip(plans, specs, strict=True):
        path = batch.save_submission(plan, spec, backend.render(spec))
        batch.add_sub(SubState(plan, spec, path, probing=probing))
    return batch


def preview_submission(
    backend: Backend,
    plans: list[Plan],
    where: tuple[str, str, str | None],
    resources: Resources,
    max_running: int | None,
    environment: Environment,
) -> Submission:
    """The script and command of the first of ``plans`` (see ``Cluster.preview``); ``where``
    is (the batch folder, the nodes' interpreter, the jobs' working directory or None)."""
    batch_dir, python, chdir = where
    spec = array_specs(
        plans, batch_dir, "FUNCTION", resources, max_running, None, chdir,
        python=python, environment=environment,
    )[0]  # fmt: skip
    script_path = os.path.join(batch_dir, "subs", "0.sh")
    store = BatchStore(batch_dir, backend.transport)
    return Submission(backend.render(spec), backend.submit_argv(spec, script_path, log_pattern(store)))
