"""Each process refuses bad settings at its start, with one message naming every bad variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deploy.stack import ROOT

pytestmark = pytest.mark.integration

#: Start commands of the three kinds of process, as ``make run``, the image and the manifests run them.
COMMANDS = {
    "api": [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "api" / "gunicorn_conf.py"), "api.wsgi:app"],
    "worker": [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "--pool", "solo"],
    "run": [sys.executable, "-m", "deploy.run"],
}
#: Per process: variables it reads, each with a bad value.
BAD = {
    "api": {"SLUICE_API_WORKERS": "zero", "SLUICE_MAX_BODY_BYTES": "0"},
    "worker": {"SLUICE_LOCK_LEASE_SECONDS": "0", "SLUICE_WEBHOOK_RETRY_SCHEDULE": "soon"},
    "run": {"SLUICE_FLOWER_PORT": "70000", "SLUICE_WORKER_CONCURRENCY": "-1"},
}


@pytest.mark.parametrize("process", sorted(COMMANDS))
def test_a_process_with_bad_settings_exits_naming_every_bad_variable(process, tmp_path):
    """The API, a worker and ``make run`` exit non-zero at once, and the output names each bad variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(BAD[process], SLUICE_VAR_DIR=str(tmp_path), SLUICE_REDIS_URL="redis://127.0.0.1:9/0")
    done = subprocess.run(COMMANDS[process], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    for name in BAD[process]:
        assert name in output, output
    assert "Traceback" not in output, output
