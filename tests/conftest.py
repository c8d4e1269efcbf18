"""Shared test fixtures: fake AWS credentials, a local S3 server (moto, loopback only), small shard data sets, one
local Ray whose workers hold a checkpoint key."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials() -> Iterator[None]:
    """Fake AWS credentials in the environment for the whole session. The config holds none: boto3 and pyarrow
    read them from the environment, and the moto server takes any. Ray started by a test (its workers) and
    subprocesses inherit them; a developer's own credentials never reach the test servers."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        yield


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (a real HTTP endpoint boto3, pyarrow and subprocesses can use)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """A fresh bucket on the local S3 server → (bucket name, `storage` config values that reach it)."""
    import boto3

    settings = {"endpoint": s3_endpoint, "region": "us-east-1"}
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name, settings


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A stand-in body generated once per test session (about a minute on 2 cores): use it as
    `body.standin_dir` instead of generating one per test."""
    from reid3dsl.body.standin import ensure_standin

    return str(ensure_standin(tmp_path_factory.mktemp("standin"), "low", 0))


@pytest.fixture(scope="session")
def toy_shards() -> Callable[..., str]:
    """Write a small data set straight through `DatasetWriter` (random crops with a person-sized box as
    mask and keypoints inside it): `toy_shards(root, ids=8, per_id=6, shard_size=10, outfits=2, splits=...)`."""
    from reid3dsl.config import StorageConfig
    from reid3dsl.data.schema import Sample, SampleMeta
    from reid3dsl.data.writer import DatasetWriter

    def make(
        root: Path | str,
        ids: int = 8,
        per_id: int = 6,
        shard_size: int = 10,
        outfits: int = 2,
        splits: tuple[str, ...] = ("train",),
        storage: StorageConfig | None = None,
        size: tuple[int, int] = (32, 16),
    ) -> str:
        rng = np.random.default_rng(0)
        h, w = size
        with DatasetWriter(str(root), "toy", storage or StorageConfig(), shard_size=shard_size) as writer:
            for split in splits:
                for pid in range(1, ids + 1):
                    for j in range(per_id):
                        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                        mask = np.zeros((h, w), np.uint8)
                        mask[h // 8 : h - h // 8, w // 4 : w - w // 4] = 255
                        kp = np.zeros((17, 3), np.float32)
                        kp[:, 0] = rng.uniform(w / 4, 3 * w / 4, 17)
                        kp[:, 1] = rng.uniform(h / 8, h - h / 8, 17)
                        kp[:, 2] = rng.uniform(0.5, 1.0, 17)
                        meta = SampleMeta(pid, j % 3, f"{pid}_{j % outfits}", "toy", split, f"{split}/{pid}_{j}.jpg")
                        writer.write(Sample(f"{split}/{pid:03d}_{j:02d}", image, kp, meta, mask))
        return str(root)

    return make


@pytest.fixture(scope="session")
def checkpoint_key() -> str:
    """The checkpoint key (REID3DSL_CHECKPOINT_KEY) in the environment of `ray_local`'s workers."""
    return "session-checkpoint-key-" + secrets.token_hex(16)


@pytest.fixture(scope="session")
def ray_local(checkpoint_key: str) -> Iterator[None]:
    """One local Ray for the whole session (start-up dominates small runs): 2 CPUs, no dashboard. Its workers have
    `checkpoint_key` in their environment, as every node of a cluster has it; this process does not keep it, so
    configs loaded here are unchanged (`smoke_args` gives the key to the driver's config)."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REID3DSL_CHECKPOINT_KEY", checkpoint_key)  # Ray's processes take this process's environment
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_args(
    tmp_path_factory: pytest.TempPathFactory, standin_dir: str, checkpoint_key: str
) -> Callable[..., list[str]]:
    """`--set` overrides that run configs/smoke.yaml inside a temporary folder (its synthesized data shared by
    the session): `smoke_args(workdir, name)` → data, body, storage and MLflow settings for that run, and the
    checkpoint key (redacted in what the driver sends; `ray_local`'s workers take it from their environment)."""
    data_root = tmp_path_factory.mktemp("smoke-data") / "smoke"

    def make(workdir: Path, name: str = "smoke") -> list[str]:
        return [
            f"data.root={data_root}", f"body.standin_dir={standin_dir}",
            f"cluster.storage_path={workdir / 'runs'}", f"cluster.name={name}",
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", f"cluster.checkpoint_key={checkpoint_key}",
        ]

    return make


@pytest.fixture(scope="session")
def process_group() -> Iterator[None]:
    """A one-process gloo group, as DeepSpeed expects one — for the whole session: DeepSpeed keeps the first
    group it sees, so a group destroyed and made anew would leave it holding a dead one."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        dist.init_process_group("gloo", rank=0, world_size=1)
        yield
        dist.destroy_process_group()
