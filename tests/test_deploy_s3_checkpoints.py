"""Checkpoints on S3: the smoke job with `cluster.storage_path=s3://...` on an S3 server (moto, 127.0.0.1) puts
every worker's part of its checkpoints there, through the pyarrow filesystem built from the `storage` section
(the credentials in the environment, as the workers inherit it), leaves nothing on local disk, and a rerun of
the same job name resumes from S3. The job tracks to an MLflow server over HTTP with a password in
`tracking.uri`, a token and fake AWS keys in the driver's environment: none of them appears in what the driver sends
the workers, the MLflow store (params, tags, artifacts: config.yaml, model.pt), the S3 objects (checkpoints) or
any log."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reid3dsl.config import load_config
from reid3dsl.train.driver import run_job

pytestmark = pytest.mark.slow

# Fake secrets with the shapes of real ones; the scan looks for each verbatim.
PASSWORD = "mlflow-uri-Pass+word-0003"
ENV_SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAS3TESTSECRETS004", "AWS_SECRET_ACCESS_KEY": "s3Secret/Test+Key000000000005",
               "MLFLOW_TRACKING_TOKEN": "mlflow-env-token-0006"}


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An MLflow server (no auth: it ignores the credentials sent) on 127.0.0.1 → (URL, its data folder)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = tmp_path / "mlflow-server"
    store.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the MLflow server did not start") from None
            time.sleep(0.5)
    yield url, store
    proc.terminate()
    proc.wait(timeout=30)


def _checkpoints(client: Any, bucket: str, prefix: str) -> dict[str, list[str]]:
    """Checkpoint folder name → the object keys in it, for the run folder `prefix` (`ckpt/<cluster.name>`)."""
    found: dict[str, list[str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            folder, is_folder, rest = obj["Key"][len(prefix) + 1:].partition("/")
            if folder.startswith("checkpoint_") and is_folder:  # not Ray's checkpoint_manager_snapshot.json
                found.setdefault(folder, []).append(rest)
    return found


def _state(client: Any, bucket: str, prefix: str, folder: str) -> dict[str, int]:
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/{folder}/train_state.json")["Body"].read()
    return json.loads(body)


def _ray_logs() -> list[Path]:
    import ray

    return [p for p in Path(ray._private.worker._global_node.get_logs_dir_path()).rglob("*") if p.is_file()]


def test_smoke_job_checkpoints_to_s3_and_a_rerun_resumes_from_there(
    ray_local: None, smoke_args: Callable[..., list[str]], s3_bucket: tuple[str, dict[str, str]], tmp_path: Path,
    mlflow_server: tuple[str, Path], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import ray.train.torch

    from reid3dsl.data.s3 import s3_client

    bucket, settings = s3_bucket
    server, store = mlflow_server
    args = [
        *smoke_args(tmp_path, "s3-job"), f"cluster.storage_path=s3://{bucket}/ckpt",
        *(f"storage.{key}={value}" for key, value in settings.items()),
        f"tracking.uri={server.replace('://', f'://alice:{PASSWORD}@')}",
    ]
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # the driver exports them
        monkeypatch.delenv(name, raising=False)
    sent: list[dict[str, Any]] = []

    class RecordingTrainer(ray.train.torch.TorchTrainer):
        def __init__(self, *a: Any, **kw: Any) -> None:
            sent.append(kw["train_loop_config"])
            super().__init__(*a, **kw)

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", RecordingTrainer)
    job_env = {"MLFLOW_TRACKING_TOKEN": ENV_SECRETS["MLFLOW_TRACKING_TOKEN"]}
    first = run_job(load_config("configs/smoke.yaml", [*args, "train.epochs=1"], env=job_env))
    assert first["epoch"] == 1 and first["step"] == 2

    client = s3_client(load_config(None, args, env={}).storage)
    prefix = "ckpt/s3-job"
    found = _checkpoints(client, bucket, prefix)
    assert len(found) == 1, f"expected one checkpoint under s3://{bucket}/{prefix}, found {sorted(found)}"
    ((folder, files),) = found.items()
    assert _state(client, bucket, prefix, folder)["step"] == 2
    for rank in (0, 1):
        assert any(f"zero_pp_rank_{rank}_" in name for name in files), f"rank {rank}'s optimizer shard is not on S3"
    assert not (tmp_path / "runs").exists(), "checkpoints went to local disk"

    second = run_job(load_config("configs/smoke.yaml", [*args, "train.epochs=2"], env=job_env))
    assert second["epoch"] == 2 and second["step"] == 4, "the rerun did not continue from the S3 checkpoint"
    states = [_state(client, bucket, prefix, f) for f in sorted(_checkpoints(client, bucket, prefix))]
    assert [s["step"] for s in states] == [2, 4]

    tracking = mlflow.MlflowClient(server)
    (run,) = tracking.search_runs([tracking.get_experiment_by_name("reid3dsl-smoke").experiment_id])
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "loss/total")] == [1, 2, 3, 4]

    # Nothing written or sent holds a secret.
    secrets = [PASSWORD, *ENV_SECRETS.values()]
    assert run.data.params["tracking.password"] == "***" and run.data.params["tracking.uri"] == server
    values = [*run.data.params.values(), *run.data.params, *run.data.tags.values(), *run.data.metrics]
    assert not [v for v in values if any(s in v for s in secrets)]
    assert len(sent) == 2 and not [s for s in secrets if s.encode("latin1") in pickle.dumps(sent)]
    artifacts = [p for p in store.rglob("*") if p.is_file()]  # the server's database and artifact store
    assert any(p.name == "config.yaml" for p in artifacts) and any(p.suffix == ".pt" for p in artifacts)
    objects = [client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
               for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
               for o in page.get("Contents", [])]
    out, err = capfd.readouterr()
    texts = [*(p.read_bytes() for p in artifacts + _ray_logs()), *objects, out.encode(), err.encode()]
    assert objects and "MLflow run" in out
    assert not [s for s in secrets for t in texts if s.encode() in t]
