"""The SLURM backend over SSH against the real test cluster, as the login node's user
(corralr), not this process's (root): the user the scheduler sees is asked, the queue is
read with --me, and an sbatch whose connection broke after it ran is found, not repeated."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from corral.backends.slurm import SlurmBackend
from corral.transports.ssh import SshTransport
from tests.slurm.helpers import cluster

from .conftest import LoginNode

pytestmark = pytest.mark.slurm


@pytest.fixture
def ssh(node: LoginNode) -> Iterator[SshTransport]:
    cluster("start")
    transport = SshTransport("corral-login", node.python, config=node.config, max_wait=60)
    transport.exit_master()
    yield transport
    transport.close()
    transport.exit_master()


def test_the_backend_asks_the_queue_as_the_remote_user_and_finds_an_sbatch_it_lost(
    ssh: SshTransport, node: LoginNode
) -> None:
    backend = SlurmBackend(ssh)
    assert backend.user() == node.user != "root"
    folder = f"{node.home}/corral-slurm-{uuid.uuid4().hex[:8]}"
    ssh.makedirs(folder)
    script = f"{folder}/0.sh"
    ssh.write_bytes(script, b"#!/bin/bash\n#SBATCH --array=0-1\n#SBATCH --time=1\nsleep 60\n")
    before = backend.queued_jobs()
    answer = backend.check(
        ["sbatch", "--parsable", f"--chdir={folder}", f"--output={folder}/%A_%a.out", script]
    )
    job = answer.stdout.strip()
    try:
        ssh.exit_master()  # the answer is in hand, but as if it had been lost with the connection
        assert backend._submitted(script) == job  # squeue --me, over a new session
        assert backend.queued_jobs() == before + 2  # the array's elements, as corralr's
    finally:
        backend.cancel([job])
        shutil.rmtree(folder)
