"""A training worker is killed mid-epoch (SIGKILL, like the OOM killer or a crashed process): Ray Train restarts
the workers from the latest checkpoint (`FailureConfig(max_failures)`) and the run ends with the optimizer steps of
an uninterrupted run, at most one checkpoint interval of work repeated and one continuous MLflow run. The same run
carries fake credentials (environment and config) and the session's checkpoint key, which must appear in no log,
MLflow param, tag or artifact, and no checkpoint. Then its latest checkpoint (signed manifests) is truncated: a
rerun says so in one warning and resumes from the previous one."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reid3dsl.config import load_config
from reid3dsl.train.driver import run_job

pytestmark = pytest.mark.slow

EPOCHS, STEPS = 3, 4
# Fake credentials with the shapes of real ones; the scan looks for each of them verbatim.
ENV_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAULTTESTENV0001",
    "AWS_SECRET_ACCESS_KEY": "envSecret/Fault+Test+Key0000000000000001",
    "MLFLOW_TRACKING_TOKEN": "mlflow-env-token-fault-0001",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-env-password-fault-0001",
}
CONFIG_SECRETS = {
    "tracking.token": "mlflow-cfg-token-fault-0002",
}
PROGRESS = re.compile(rf"epoch (\d+)/{EPOCHS}:\s+\d+%\|[^|]*\|\s*(\d+)/{STEPS}")


def _logs_dir() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path())


def _rank0_logs(since: float) -> dict[int, str]:
    """pid → text of every rank-0 training worker log written since `since` (one per attempt)."""
    found = {}
    for path in _logs_dir().glob("worker-*.err"):
        if path.stat().st_mtime < since:
            continue
        text = path.read_text(errors="replace").replace("\r", "\n")
        if "[rank 0] reid3dsl.train.loop: worker 0/" in text:
            found[int(path.stem.rsplit("-", 1)[1])] = text
    return found


def _steps_done(text: str, epoch: int) -> int:
    """The last progress count of `epoch` in a rank-0 log (0 if that epoch never started)."""
    return max((int(m.group(2)) for m in PROGRESS.finditer(text) if int(m.group(1)) == epoch), default=0)


def _kill_mid_epoch(run_dir: Path, since: float, killed: dict[str, Any], stop: threading.Event) -> None:
    """Once the first checkpoint is registered and rank 0 is 2 steps into epoch 2, SIGKILL rank 0's process."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not stop.wait(0.2):
        if not (snapshot.is_file() and "checkpoint_" in snapshot.read_text(errors="replace")):
            continue
        for pid, text in _rank0_logs(since).items():
            if _steps_done(text, 2) >= 2:
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, at=time.time())
                return


@pytest.fixture(scope="module")
def killed_run(
    ray_local: None, smoke_args: Callable[..., list[str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("worker-death")
    overrides = [*smoke_args(workdir, "kill"), f"train.epochs={EPOCHS}", f"train.steps_per_epoch={STEPS}",
                 "train.checkpoint_every=1", "cluster.max_failures=1", f"eval.every={EPOCHS}",
                 *(f"{k}={v}" for k, v in CONFIG_SECRETS.items())]
    since = time.time()
    killed: dict[str, Any] = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_mid_epoch, args=(workdir / "runs" / "kill", since, killed, stop))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV_SECRETS.items():
            mp.setenv(name, value)
        killer.start()
        try:
            metrics = run_job(load_config("configs/smoke.yaml", overrides))
        finally:
            stop.set()
            killer.join()
    return {"workdir": workdir, "metrics": metrics, "killed": killed, "since": since, "overrides": overrides}


def _mlflow_run(workdir: Path) -> tuple[Any, Any]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reid3dsl-smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "the restart opened another MLflow run"
    return client, runs[0]


def _checkpoints(workdir: Path, name: str) -> list[Path]:
    return sorted((workdir / "runs" / name).glob("checkpoint_2*"))


def _optimizer_steps(checkpoint: Path) -> tuple[int, int]:
    """(global_steps, skipped_steps) of the network's DeepSpeed engine saved in `checkpoint`."""
    import torch

    states = torch.load(checkpoint / "model" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
    return int(states["global_steps"]), int(states["skipped_steps"])


def test_a_worker_killed_mid_epoch_restarts_from_the_checkpoint_and_the_run_loses_nothing(
    killed_run: dict[str, Any]
) -> None:
    killed, metrics, workdir = killed_run["killed"], killed_run["metrics"], killed_run["workdir"]
    assert killed, "the worker was never killed"
    total = EPOCHS * STEPS
    assert metrics["epoch"] == EPOCHS and metrics["step"] == total

    # Optimizer steps actually taken: the same as an uninterrupted run (every step applied once).
    assert _optimizer_steps(_checkpoints(workdir, "kill")[-1]) == (total, 0)

    # The killed attempt and the one that replaced it; the new one resumed from the epoch-1 checkpoint.
    logs = _rank0_logs(killed_run["since"])
    assert killed["pid"] in logs and len(logs) >= 2
    killed_log = logs[killed["pid"]]
    resumed = [t for pid, t in logs.items() if pid != killed["pid"] and "resumed from" in t]
    assert len(resumed) == 1 and re.search(rf"resumed from \S+ at epoch 1, step {STEPS}\b", resumed[0])
    repeated = _steps_done(killed_log, 2)
    assert 1 <= repeated <= STEPS, "more than one checkpoint interval was repeated"

    # One continuous MLflow run: every step once, none missing.
    client, run = _mlflow_run(workdir)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/total")]
    assert steps == list(range(1, total + 1))
    print(f"\nworker killed 2+ steps into epoch 2: {repeated} of {total} steps repeated "
          f"(checkpoint every {STEPS} steps); run finished with {metrics['step']} steps")


def _scan(paths: list[Path], secrets: list[str]) -> list[str]:
    hits = []
    for path in paths:
        data = path.read_bytes()
        hits += [f"{path}: {s[:8]}..." for s in secrets if s.encode() in data]
    return hits


def test_credentials_appear_in_no_log_param_tag_artifact_or_checkpoint(
    killed_run: dict[str, Any], checkpoint_key: str, tmp_path: Path
) -> None:
    workdir = killed_run["workdir"]
    secrets = [*ENV_SECRETS.values(), *CONFIG_SECRETS.values(), checkpoint_key]
    client, run = _mlflow_run(workdir)
    assert run.data.params["tracking.token"] == run.data.params["cluster.checkpoint_key"] == "***"
    values = [*run.data.params.values(), *run.data.params, *run.data.tags.values(), *run.data.metrics]
    assert not [v for v in values if any(s in v for s in secrets)]

    artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(p.suffix == ".pt" for p in files)
    logs = [p for p in _logs_dir().rglob("*") if p.is_file()]
    stored = [p for p in (workdir / "runs").rglob("*") if p.is_file()]
    assert logs and stored
    assert _scan(files + logs + stored, secrets) == []


def test_a_truncated_latest_checkpoint_is_reported_and_the_previous_one_resumes_the_run(
    killed_run: dict[str, Any], smoke_args: Callable[..., list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    workdir = killed_run["workdir"]
    previous, latest = _checkpoints(workdir, "kill")[-2:]
    assert all("hmac" in json.loads(m.read_text()) for m in latest.glob("manifest-rank*.json"))
    shard = latest / "model" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    since = time.time()

    metrics = run_job(load_config("configs/smoke.yaml", [*killed_run["overrides"], f"train.epochs={EPOCHS + 1}"]))

    assert metrics["epoch"] == EPOCHS + 1 and metrics["step"] == (EPOCHS + 1) * STEPS
    logs = "\n".join(_rank0_logs(since).values())
    warning = re.findall(r".*checkpoint \S+ is unusable.*", logs)
    assert len(warning) == 1, logs[-3000:]
    assert latest.name in warning[0] and "zero_pp_rank_1_mp_rank_00_optim_states.pt" in warning[0]
    assert "truncated" in warning[0] and f"falling back to {previous}" in warning[0]
    assert re.search(rf"resumed from \S*{previous.name} at epoch {EPOCHS - 1}, step {(EPOCHS - 1) * STEPS}\b", logs)
    # Every optimizer step of the new run was applied once on top of the previous checkpoint's.
    assert _optimizer_steps(_checkpoints(workdir, "kill")[-1]) == ((EPOCHS + 1) * STEPS, 0)
