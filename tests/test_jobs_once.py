"""Scheduled jobs run once per tick across every worker: the (job, tick) claim in the database."""

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from gateway import db, jobs
from gateway.models import JobRun

ROOT = Path(__file__).resolve().parent.parent

CLAIM = """
import sys
from gateway import create_app, jobs
app = create_app({"start_jobs": False})
with app.app_context():
    print(jobs.claim(sys.argv[1], int(sys.argv[2])))
"""


def _claim_elsewhere(gateway, job: str, tick: int) -> subprocess.Popen:
    env = {**os.environ, "GATEWAY_INSTANCE": str(gateway.instance), "GATEWAY_SECRET_KEY": "test-secret",
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CLAIM, job, str(tick)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_one_claim_per_job_and_tick_across_processes(gateway):
    procs = [_claim_elsewhere(gateway, "prune_expired_savings", 42) for _ in range(4)]  # four "workers" at once
    answers = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(answers) == ["False", "False", "False", "True"], [p.stderr for p in procs]
    assert jobs.claim("prune_expired_savings", 42) is False  # this process too
    assert jobs.claim("prune_expired_savings", 43) is True  # the next tick is free
    assert jobs.claim("prune_change_events", 42) is True  # and so is another job's
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(JobRun)) == 3


def test_a_job_runs_once_per_tick(gateway, monkeypatch):
    runs = []

    def sample_job() -> None:
        runs.append(1)

    clock = [1_000_000.0]
    monkeypatch.setattr(jobs.time, "time", lambda: clock[0])
    job = jobs.once(sample_job, 60)
    job()
    job()  # the same minute: already claimed
    assert runs == [1]
    clock[0] += 60
    job()
    assert runs == [1, 1] and job.__name__ == "sample_job"
