#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs corral and its test tools into .venv,
# starts the real SLURM test cluster (scripts/test-cluster.sh, as root; it installs Debian's
# SLURM packages when missing), the SGE cell and a loopback login node (scripts/test-sshd.sh),
# then runs ruff, mypy --strict, import-linter and pytest. Extra arguments go to pytest, e.g.
# `bash scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    if ! "$python" -m venv .venv 2>/dev/null; then
        rm -rf .venv  # Debian ships venv separately
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv .venv
    fi
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

bash scripts/test-cluster.sh start
bash scripts/test-sge.sh start
bash scripts/test-sshd.sh start  # a loopback login node for the remote tests

.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layers and no import cycles (pyproject.toml)
exec .venv/bin/pytest "$@"
