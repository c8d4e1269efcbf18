"""cluster/local.sh for real: a Ray head and an MLflow server on loopback, the printed `ray job submit` line
run as printed, then `stop`.

It runs inside a network namespace of its own (its ports cannot meet anyone else's) and a PID namespace of
its own (so `ray stop` sees only this test's Ray). The job is a stand-in for ray_job.py that parses the
same command line through the project's config loader and logs one metric to the MLflow URI it was given.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from netns import namespaces_unavailable, private_hosts

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

STAND_IN_JOB = textwrap.dedent(
    """
    import argparse

    import mlflow
    import ray

    from reid3dsl.config import add_config_args, config_from_args

    parser = argparse.ArgumentParser()
    add_config_args(parser)
    cfg = config_from_args(parser.parse_args())
    ray.init()
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_experiment(cfg.tracking.experiment)
    with mlflow.start_run(run_name="local-sh"):
        mlflow.log_metric("ray_nodes", nodes)
    print("logged to", cfg.tracking.uri)
    """
)

# Run as pid 1 of a fresh PID namespace: when it exits, the kernel ends whatever it left behind.
SESSION = textwrap.dedent(
    """
    set -euo pipefail
    cluster/local.sh start configs/local.yaml > start.out 2>&1 || { cat start.out; exit 1; }
    submit=$(grep '^RAY_AUTH_MODE=token ray job submit ' start.out)
    eval "$submit" > submit.out 2>&1 || { cat submit.out; exit 1; }
    RAY_AUTH_MODE=token ray job list --address http://127.0.0.1:8265 > jobs.out
    ray job list --address http://127.0.0.1:8265 > unauthenticated.out 2>&1 && exit 4
    cluster/local.sh stop > stop.out 2>&1
    # Everything but this shell (pid 1) and ps itself must be gone.
    ps -eo pid=,stat=,args= > procs.out
    awk '$1 != 1 && $3 != "ps"' procs.out > left.out
    if [[ -s left.out ]]; then exit 3; fi
    """
)


def test_local_sh_runs_the_printed_submit_line_with_token_auth_and_mlflow_on_loopback(tmp_path: Path) -> None:
    if (reason := namespaces_unavailable()) is not None or shutil.which("unshare") is None:
        pytest.skip(f"needs network and PID namespaces ({reason or 'no unshare'}): `ray stop` would reach other Rays")
    root = tmp_path / "project"
    (root / "cluster").mkdir(parents=True)
    shutil.copy2(ROOT / "cluster" / "local.sh", root / "cluster" / "local.sh")
    (root / "configs").mkdir()
    (root / "configs" / "local.yaml").write_text("tracking:\n  experiment: local-sh\n")
    (root / "ray_job.py").write_text(STAND_IN_JOB)
    (tmp_path / "home").mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="r3d-"))  # Ray's socket paths must stay short
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_NUM_CPUS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "REID3DSL_LOCAL_DIR": str(tmp_path / "state"),
    }
    try:
        with private_hosts(1) as (host,):
            done = subprocess.run(
                host.wrap(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", SESSION]),
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    def out(name: str) -> str:
        path = root / name
        return path.read_text() if path.exists() else ""

    assert done.returncode == 0, (
        f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{out('left.out')}"
    )
    assert "SUCCEEDED" in out("jobs.out") and "ray_job.py --config configs/local.yaml" in out("jobs.out")
    assert "token" in out("unauthenticated.out").lower(), "a client without the token must be refused"
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file(), "local.sh must create the token it relies on"
    with sqlite3.connect(root / "mlflow.db") as db:
        metrics = db.execute(
            "SELECT m.value FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
            "JOIN experiments e ON r.experiment_id = e.experiment_id WHERE e.name = 'local-sh' AND m.key = 'ray_nodes'"
        ).fetchall()
    assert metrics == [(1.0,)], "the job's metric must reach ./mlflow.db through the MLflow server"
