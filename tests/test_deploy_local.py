"""`ray job submit` of the real main job against a local head: cluster/local.sh starts a Ray head (token
authentication on) and an MLflow server on loopback, the `ray job submit --working-dir .` line it prints runs
`ray_job.py --config configs/smoke.yaml` from this checkout, and `local.sh stop` ends everything.

It runs inside a network namespace of its own (its ports cannot meet anyone else's) and a PID namespace of
its own (so `ray stop` sees only this test's Ray). The job's data and stand-in body are the test session's
(absolute paths appended to the printed line); MLflow's store is a temporary folder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from netns import namespaces_unavailable, private_hosts

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

# Run as pid 1 of a fresh PID namespace, in the checkout: when it exits, the kernel ends whatever it left behind.
SESSION = textwrap.dedent(
    """
    set -euo pipefail
    cluster/local.sh start configs/smoke.yaml > "$OUT/start.out" 2>&1 || { cat "$OUT/start.out"; exit 1; }
    submit=$(grep '^RAY_AUTH_MODE=token ray job submit ' "$OUT/start.out")
    eval "$submit $JOB_ARGS" > "$OUT/submit.out" 2>&1 || { tail -c 6000 "$OUT/submit.out"; exit 1; }
    # What Ray unpacked for the job: the uploaded working directory.
    pkg=$(find "$RAY_TMPDIR" -type d -path '*/working_dir_files/_ray_pkg_*' -prune | head -n 1)
    ls -A "$pkg" > "$OUT/uploaded.out"
    RAY_AUTH_MODE=token ray job list --address http://127.0.0.1:8265 > "$OUT/jobs.out"
    ray job list --address http://127.0.0.1:8265 > "$OUT/unauthenticated.out" 2>&1 && exit 4
    cluster/local.sh stop > "$OUT/stop.out" 2>&1
    # Everything but this shell (pid 1) and ps itself must be gone.
    ps -eo pid=,stat=,args= > "$OUT/procs.out"
    awk '$1 != 1 && $3 != "ps"' "$OUT/procs.out" > "$OUT/left.out"
    if [[ -s "$OUT/left.out" ]]; then exit 3; fi
    """
)


def test_ray_job_submit_runs_the_smoke_job_from_the_checkout_with_token_auth_and_mlflow(
    smoke_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    import mlflow

    if (reason := namespaces_unavailable()) is not None or shutil.which("unshare") is None:
        pytest.skip(f"needs network and PID namespaces ({reason or 'no unshare'}): `ray stop` would reach other Rays")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "home").mkdir()
    # The session's data and stand-in body, this test's checkpoints, one epoch (of 2 steps); the MLflow
    # server's URI stays as printed.
    job_args = [*(a for a in smoke_args(tmp_path, "submitted") if not a.startswith("tracking.uri=")), "train.epochs=1"]
    ray_tmp = Path(tempfile.mkdtemp(prefix="r3d-"))  # Ray's socket paths must stay short
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "AWS_"))},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_NUM_CPUS": "2",
        "RAY_USAGE_STATS_ENABLED": "0",
        "REID3DSL_LOCAL_DIR": str(tmp_path / "state"),
        "REID3DSL_MLFLOW_DIR": str(tmp_path / "mlflow"),
        "OUT": str(out),
        "JOB_ARGS": " ".join(f"--set {shlex.quote(a)}" for a in job_args),
    }
    try:
        with private_hosts(1) as (host,):
            done = subprocess.run(
                host.wrap(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", SESSION]),
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=400,
            )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    def read(name: str) -> str:
        path = out / name
        return path.read_text() if path.exists() else ""

    assert done.returncode == 0, (
        f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}\n{read('left.out')}"
    )
    assert "SUCCEEDED" in read("jobs.out") and "ray_job.py --config configs/smoke.yaml" in read("jobs.out")
    assert "token" in read("unauthenticated.out").lower(), "a client without the token must be refused"
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file(), "local.sh must create the token it relies on"

    uploaded = set(read("uploaded.out").split())
    assert {"ray_job.py", "reid3dsl", "shards", "configs"} <= uploaded
    assert not uploaded & {".git", ".venv", "data", "runs", "mlflow.db", "mlartifacts"}, (
        f"the upload must leave out history, environments, data and stores: {sorted(uploaded)}"
    )

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reid3dsl-smoke")
    assert experiment is not None, "the job's run must reach the MLflow server's store"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/total")] == [1, 2]
    assert {"eval/cc/fused/rank1", "eval/standard/rgb/mAP"} <= set(run.data.metrics)
    pictures = list((tmp_path / "mlflow" / "mlartifacts").rglob("ranked_results.png"))
    assert pictures, "artifacts must go through the server into its artifact store"
    assert list((tmp_path / "runs" / "submitted").glob("checkpoint_*")), "checkpoints belong where the job was told"
