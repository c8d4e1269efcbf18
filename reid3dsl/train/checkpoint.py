"""Checkpoints through Ray Train, verified on the way back.

Saving: every rank writes its DeepSpeed shard of both engines into a local folder, rank 0 adds the loop state,
and each rank adds a manifest (`manifest-rank<r>.json`: size and SHA-256 of every file it wrote, and the world
size). `ray.train.report` merges the folders into one checkpoint in storage; the upload is ours
(`checkpoint_upload_fn`) so that it retries with backoff (storage.retries, storage.backoff) when the storage
endpoint goes away for a while. Ray registers a checkpoint only after every rank has reported it, so a worker that
dies mid-upload leaves at most an unregistered, incomplete folder.

Restoring: the latest registered checkpoint is checked against its manifests before DeepSpeed reads it. A
truncated or corrupt one (missing manifest, missing file, wrong size or hash, unreadable state) is reported in one
warning and the previous checkpoint of the run (`CheckpointConfig(num_to_keep=2)` keeps it) is used instead; every
rank takes the same decision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reid3dsl.config import Config
from reid3dsl.errors import UserError

log = logging.getLogger(__name__)
STATE_FILE = "train_state.json"
MANIFEST_PREFIX = "manifest-rank"
MODEL_TAG = "model"
DISC_TAG = "discriminator"
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's folder names: checkpoint_<local time to the microsecond>


class CheckpointError(RuntimeError):
    """No checkpoint of the run can be used."""


@dataclass
class TrainState:
    """Where the loop is: epochs done, optimizer steps attempted, steps skipped for non-finite numbers, the current
    streak of such steps and what went bad first in it (e.g. `loss/keypoint`, `grad/network`)."""

    epoch: int = 0
    step: int = 0
    skipped_steps: int = 0
    bad_in_a_row: int = 0
    first_bad: str = ""


def storage(cfg: Config) -> tuple[str, Any]:
    """Ray Train's storage path and pyarrow filesystem for `cluster.storage_path`: S3 through pyarrow with the
    `storage` section's settings, as the data pipeline uses them (path without `s3://`), else the local
    filesystem."""
    from pyarrow import fs

    path = cfg.cluster.storage_path
    if path.startswith("s3://"):
        from reid3dsl.data.s3 import pyarrow_s3_filesystem

        return path[len("s3://"):].rstrip("/"), pyarrow_s3_filesystem(cfg.storage)
    return path.rstrip("/"), fs.LocalFileSystem()


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_manifest(folder: Path, rank: int, world_size: int) -> Path:
    """List every file under `folder` (this rank's part of a checkpoint) with its size and SHA-256."""
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(MANIFEST_PREFIX)
    }
    path = folder / f"{MANIFEST_PREFIX}{rank}.json"
    path.write_text(json.dumps({"rank": rank, "world_size": world_size, "files": files}, indent=1))
    return path


def verify(folder: Path, world_size: int) -> str | None:
    """What is wrong with the checkpoint in `folder` (None: nothing): every rank's manifest must be there and every
    file it lists must have its size and hash. A checkpoint written by another number of workers is a UserError
    (ZeRO splits optimizer state per worker, so DeepSpeed cannot load it), not a reason to fall back."""
    manifests = sorted(folder.glob(f"{MANIFEST_PREFIX}*.json"))
    if not manifests:
        return "no manifest (written before manifests existed, or truncated)"
    try:
        docs = [json.loads(p.read_text()) for p in manifests]
        written_by = {int(d["world_size"]) for d in docs}
        ranks = {int(d["rank"]) for d in docs}
        files = [(name, int(meta["size"]), str(meta["sha256"])) for d in docs for name, meta in d["files"].items()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable manifest ({type(exc).__name__}: {exc})"
    if len(written_by) != 1:
        return f"manifests disagree on the number of workers ({sorted(written_by)})"
    (saved_world,) = written_by
    if saved_world != world_size:
        raise UserError(
            f"checkpoint '{folder}': written by {saved_world} workers, this run has {world_size} "
            "(cluster.num_workers): expected the same number, since ZeRO splits optimizer state per worker"
        )
    missing = sorted(set(range(saved_world)) - ranks)
    if missing:
        return f"no manifest of rank(s) {missing} (incomplete upload)"
    for name, size, digest in files:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, expected {size} (truncated?)"
        if _sha256(path) != digest:
            return f"{name} does not match its SHA-256 (corrupt)"
    try:
        TrainState(**json.loads((folder / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        return f"{STATE_FILE} unreadable ({type(exc).__name__})"
    return None


def run_checkpoints(cfg: Config) -> list[Any]:
    """The checkpoint folders of this run in storage (local or S3), newest first, as `ray.train.Checkpoint`s."""
    import ray.train
    from pyarrow import fs

    path, filesystem = storage(cfg)
    selector = fs.FileSelector(f"{path}/{cfg.cluster.name}", allow_not_found=True)
    found = [i for i in filesystem.get_file_info(selector)
             if i.type == fs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX)]
    return [ray.train.Checkpoint(path=i.path, filesystem=filesystem)
            for i in sorted(found, key=lambda i: i.base_name, reverse=True)]


def _agree(problem: str | None) -> str | None:
    """The first rank's problem if any rank has one, so that every rank falls back together."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return problem
    seen: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, problem)
    return next((p for p in seen if p is not None), None)


def _name(checkpoint: Any) -> str:
    return Path(checkpoint.path).name


def restore(cfg: Config, engine: Any, disc_engine: Any | None) -> TrainState:
    """Load the latest usable checkpoint of the run into the engines → its `TrainState` (fresh if none exists).

    The latest is the one Ray Train reports; if it fails verification, the run's earlier checkpoints in storage
    are tried newest first. None usable → `CheckpointError` (starting over would silently discard the run)."""
    import ray.train
    import torch.distributed as dist

    latest = ray.train.get_checkpoint()
    if latest is None:
        return TrainState()
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    candidates = [latest, *(c for c in run_checkpoints(cfg) if _name(c) < _name(latest))]
    problems = []
    for i, checkpoint in enumerate(candidates):
        with checkpoint.as_directory() as folder:
            problem = _agree(verify(Path(folder), world))
            if problem is None:
                engine.load_checkpoint(folder, tag=MODEL_TAG)
                if disc_engine is not None:
                    disc_engine.load_checkpoint(folder, tag=DISC_TAG)
                state = TrainState(**json.loads((Path(folder) / STATE_FILE).read_text()))
                log.info("resumed from %s at epoch %d, step %d", checkpoint.path, state.epoch, state.step)
                return state
        problems.append(f"{checkpoint.path}: {problem}")
        nxt = f"falling back to {candidates[i + 1].path}" if i + 1 < len(candidates) else "no earlier checkpoint"
        log.warning("checkpoint %s is unusable (%s); %s", checkpoint.path, problem, nxt)
    raise CheckpointError(f"no usable checkpoint of job '{cfg.cluster.name}': " + "; ".join(problems))


def checkpoint_uploader(cfg: Config) -> Callable[[Any, str], Any]:
    """Ray Train `checkpoint_upload_fn`: copy a rank's checkpoint folder into the run's folder in storage, retried
    with exponential backoff (storage.retries times from storage.backoff seconds) when storage fails."""
    from reid3dsl.data.s3 import backoff_s, retry

    def upload(checkpoint: Any, dir_name: str) -> Any:
        import ray.train
        from pyarrow import fs

        path, filesystem = storage(cfg)
        dest = f"{path}/{cfg.cluster.name}/{dir_name}"

        def copy() -> None:
            filesystem.create_dir(dest)
            # One thread: pyarrow's threaded uploads to S3 are unsafe (apache/arrow#32372, as Ray notes too).
            fs.copy_files(checkpoint.path, dest, source_filesystem=checkpoint.filesystem,
                          destination_filesystem=filesystem, use_threads=False)

        retry(copy, cfg.storage.retries, lambda a: backoff_s(cfg.storage, a), f"upload of checkpoint {dest}")
        return ray.train.Checkpoint(path=dest, filesystem=filesystem)

    return upload


def save_and_report(cfg: Config, engine: Any, disc_engine: Any | None, state: TrainState, metrics: dict[str, Any],
                    checkpoint: bool) -> None:
    """`ray.train.report(metrics)` on every rank, with a checkpoint of both engines (and manifests) when
    `checkpoint`."""
    import ray.train
    import torch.distributed as dist

    if not checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="reid3dsl-ckpt-") as tmp:
        folder = Path(tmp)
        engine.save_checkpoint(str(folder), tag=MODEL_TAG)
        if disc_engine is not None:
            disc_engine.save_checkpoint(str(folder), tag=DISC_TAG)
        rank, world = dist.get_rank(), dist.get_world_size()
        if rank == 0:
            (folder / STATE_FILE).write_text(json.dumps(asdict(state)))
        write_manifest(folder, rank, world)
        dist.barrier()
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
                         checkpoint_upload_fn=checkpoint_uploader(cfg))
