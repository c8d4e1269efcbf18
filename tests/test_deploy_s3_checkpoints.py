"""Checkpoints on S3: the smoke job with `cluster.storage_path=s3://...` on an S3 server (moto, 127.0.0.1) puts
every worker's part of its checkpoints there, through the pyarrow filesystem built from the `storage` section
(the credentials in the environment, as the workers inherit it), leaves nothing on local disk, and a rerun of
the same job name resumes from S3."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reid3dsl.config import load_config
from reid3dsl.train.driver import run_job

pytestmark = pytest.mark.slow


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


def test_smoke_job_checkpoints_to_s3_and_a_rerun_resumes_from_there(
    ray_local: None, smoke_args: Callable[..., list[str]], s3_bucket: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    import mlflow

    from reid3dsl.data.s3 import s3_client

    bucket, settings = s3_bucket
    args = [
        *smoke_args(tmp_path, "s3-job"), f"cluster.storage_path=s3://{bucket}/ckpt",
        *(f"storage.{key}={value}" for key, value in settings.items()),
    ]
    first = run_job(load_config("configs/smoke.yaml", [*args, "train.epochs=1"], env={}))
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

    second = run_job(load_config("configs/smoke.yaml", [*args, "train.epochs=2"], env={}))
    assert second["epoch"] == 2 and second["step"] == 4, "the rerun did not continue from the S3 checkpoint"
    states = [_state(client, bucket, prefix, f) for f in sorted(_checkpoints(client, bucket, prefix))]
    assert [s["step"] for s in states] == [2, 4]

    tracking = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = tracking.search_runs([tracking.get_experiment_by_name("reid3dsl-smoke").experiment_id])
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "loss/total")] == [1, 2, 3, 4]
