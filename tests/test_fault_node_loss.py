"""Node loss: in a real two-node Ray cluster (tests/netns.py), the worker node dies mid-run (every process of it
SIGKILLed, like a spot instance that is gone) and comes back a while later.

The job's default is to wait and resume, not to finish on what remains: the scaling is fixed
(`ScalingConfig(num_workers=cluster.num_workers)`), so Ray Train's controller keeps the run pending until the
cluster has room for every worker again, then restarts them from the latest checkpoint. That is the right default
here because the global batch is split per worker into P x K identity batches and ZeRO splits the optimizer state
per worker: a run that shrank would change the optimisation it reports and could not load its own checkpoints.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from netns import RAY_BIN, Host, RayCluster, loopback_hosts, namespaces_unavailable, private_hosts, ray_cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 2, 4
OUTAGE_S = 10.0


def _node_pids(cluster: RayCluster, host: Host) -> list[int]:
    """Every process of the node on `host`: all of its network namespace, or (loopback fallback) its raylet and
    everything under it."""
    import psutil

    if host.netns:
        out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    raylets = [p for p in psutil.process_iter(["cmdline"])
               if "raylet" in " ".join(p.info["cmdline"] or ()) and f"={host.ip}" in " ".join(p.info["cmdline"] or ())]
    return [q.pid for p in raylets for q in (p, *p.children(recursive=True))]


def _stop_node(cluster: RayCluster, host: Host) -> int:
    """SIGKILL every process of the node; → how many there were."""
    import os

    pids = _node_pids(cluster, host)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while _node_pids(cluster, host) and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(pids)


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def node_loss_run(tmp_path_factory: pytest.TempPathFactory, smoke_args: Callable[..., list[str]]) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("node-loss")
    run_dir = workdir / "runs" / "node"
    reason = namespaces_unavailable()
    if reason is not None:
        warnings.warn(f"network namespaces unavailable ({reason}): two nodes on loopback instead", stacklevel=1)
    log = workdir / "driver.log"
    with private_hosts(2) if reason is None else nullcontext(loopback_hosts(2)) as hosts:
        with ray_cluster(hosts, workdir, cpus_per_node=1) as cluster:
            overrides = [*smoke_args(workdir, "node"), f"cluster.address={cluster.address}",
                         f"train.epochs={EPOCHS}", f"train.steps_per_epoch={STEPS}", "train.checkpoint_every=1",
                         # The node loss uses one failure; one more is allowed for whatever else a shared test
                         # machine does to the run (Ray's memory monitor killing a worker).
                         "cluster.max_failures=2", f"eval.every={EPOCHS}"]
            job = [sys.executable, str(ROOT / "ray_job.py"), "--config", str(ROOT / "configs/smoke.yaml")]
            driver = cluster.popen([*job, *(a for o in overrides for a in ("--set", o))], log=log)
            snapshot = run_dir / "checkpoint_manager_snapshot.json"
            _wait_for(lambda: snapshot.is_file() and "checkpoint_" in snapshot.read_text(errors="replace"), 400,
                      "the first checkpoint")
            before = sorted(p.name for p in run_dir.glob("checkpoint_2*"))
            time.sleep(2.0)  # into epoch 2
            stopped_at = time.monotonic()
            stopped = _stop_node(cluster, hosts[1])
            time.sleep(OUTAGE_S)
            waiting = driver.poll() is None
            back = cluster.run([str(RAY_BIN), "start", f"--address={cluster.address}",
                                f"--node-ip-address={hosts[1].ip}", "--num-cpus=1",
                                f"--object-store-memory={100 * 1024**2}", "--disable-usage-stats"], host=hosts[1])
            returned_at = time.monotonic()
            code = driver.wait(timeout=400)
            finished_at = time.monotonic()
    return {"workdir": workdir, "log": log.read_text(errors="replace"), "code": code, "before": before,
            "stopped": stopped, "waiting": waiting, "back": back, "run_dir": run_dir,
            "resume_s": finished_at - returned_at, "down_s": returned_at - stopped_at, "isolated": cluster.isolated}


def test_the_job_waits_for_a_lost_node_and_resumes_from_its_checkpoint_when_it_returns(
    node_loss_run: dict[str, Any]
) -> None:
    import mlflow
    import torch

    run = node_loss_run
    log = run["log"]
    assert run["stopped"] >= 2, "the worker node had no processes to stop"
    assert run["waiting"], f"the job ended while the node was gone:\n{log[-4000:]}"
    assert run["back"].returncode == 0, run["back"].stderr[-2000:]
    assert run["code"] == 0, log[-4000:]
    assert re.search(rf"node: {EPOCHS} epochs, {EPOCHS * STEPS} steps", log), log[-3000:]

    # Resumed from a checkpoint committed before the loss; nothing committed was lost.
    resumed = re.findall(r"resumed from \S*/(checkpoint_[\d_.-]+) at epoch (\d+), step (\d+)", log)
    assert resumed and resumed[0][0] in run["before"], (resumed, run["before"])
    final = sorted(run["run_dir"].glob("checkpoint_2*"))[-1]
    states = torch.load(final / "model" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    assert int(states["global_steps"]) == EPOCHS * STEPS
    assert len(list(final.glob("manifest-rank*.json"))) == 2, "the run did not finish on both nodes"

    client = mlflow.MlflowClient(f"sqlite:///{run['workdir'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reid3dsl-smoke")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, "loss/total")]
    assert steps == list(range(1, EPOCHS * STEPS + 1))
    print(f"\nnode lost {run['down_s']:.0f} s ({'namespaces' if run['isolated'] else 'loopback'}): job waited, "
          f"resumed from {resumed[0][0]} (epoch {resumed[0][1]}, step {resumed[0][2]}) and finished "
          f"{run['resume_s']:.0f} s after the node returned")
