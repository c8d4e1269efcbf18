"""Checkpoints through Ray Train, verified on the way back.

Saving: every rank writes its DeepSpeed shard of both engines into a local folder, rank 0 adds the loop state,
and each rank adds a manifest (`manifest-rank<r>.json`: job name, world size, size and SHA-256 of every file it
wrote), signed with HMAC-SHA256 under `cluster.checkpoint_key` when one is set. `ray.train.report` merges the
folders into one checkpoint in storage through our upload (`checkpoint_upload_fn`), which retries with backoff
(storage.retries, storage.backoff). Ray registers a checkpoint only after every rank has reported it, so a worker
that dies mid-upload leaves at most an unregistered, incomplete folder.

Restoring: only the job's own folder (`storage_path/cluster.name/checkpoint_*`) is read, and a checkpoint is used
only when its manifests (signed, given a key) list every file in it with its size and hash and every `.pt` file
passes torch's weights-only unpickler; DeepSpeed then reads them weights-only too, so no checkpoint file runs
code. One that fails (truncated, corrupt, planted, swapped, another job's) is reported in one warning and the
previous one (`CheckpointConfig(num_to_keep=2)` keeps it) is used instead; every rank takes the same decision.
Without a key, manifests catch accidents but not someone who can write to the storage (one warning says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import posixpath
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reid3dsl.config import ENV_FIELDS, Config, export_to_environment
from reid3dsl.errors import UserError

log = logging.getLogger(__name__)
STATE_FILE = "train_state.json"
MANIFEST_PREFIX = "manifest-rank"
MODEL_TAG = "model"
DISC_TAG = "discriminator"
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's folder names: checkpoint_<local time to the microsecond>
SIGNATURE = "hmac"
# torch's switch that makes every torch.load weights-only, even where the caller asks for weights_only=False
# (as DeepSpeed's checkpoint engine does).
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


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


def job_folder(cfg: Config) -> tuple[str, Any]:
    """The folder that holds this job's checkpoints (storage_path/cluster.name, as `storage` spells paths) and its
    pyarrow filesystem."""
    path, filesystem = storage(cfg)
    return f"{path}/{cfg.cluster.name}", filesystem


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def checkpoint_key(cfg: Config) -> bytes | None:
    """The key that signs and checks manifests (cluster.checkpoint_key), None when unset."""
    key = cfg.cluster.checkpoint_key
    return None if key is None else key.get_secret_value().encode()


def export_key(cfg: Config) -> None:
    """Put cluster.checkpoint_key into this process's environment, where the workers of a Ray started by this
    process take it from (`config.export_to_environment`)."""
    export_to_environment(cfg, ("cluster.checkpoint_key",))


def _signature(doc: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of a manifest's content (everything but the signature), in a canonical JSON form."""
    content = json.dumps({k: v for k, v in doc.items() if k != SIGNATURE}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, content.encode(), hashlib.sha256).hexdigest()


def write_manifest(folder: Path, rank: int, world_size: int, job: str, key: bytes | None) -> Path:
    """List every file under `folder` (this rank's part of a checkpoint of job `job`) with its size and SHA-256,
    signed with `key` unless it is None."""
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(MANIFEST_PREFIX)
    }
    doc: dict[str, Any] = {"job": job, "rank": rank, "world_size": world_size, "files": files}
    if key is not None:
        doc[SIGNATURE] = _signature(doc, key)
    path = folder / f"{MANIFEST_PREFIX}{rank}.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def _allowed_deepspeed_objects() -> list[Any]:
    """What DeepSpeed pickles into our engines' states besides tensors and plain containers (ZeRO stages 0-3 in
    every precision: DeepSpeed's own fp16/bf16 modes are off, so its ZeRO optimizer keeps a static LossScaler)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def weights_only() -> Iterator[None]:
    """Inside, every torch.load (DeepSpeed's too) reads tensors, plain containers and the allowed DeepSpeed objects
    only: a pickle that would call anything else is refused before it runs."""
    import torch

    before = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals(_allowed_deepspeed_objects()):
            yield
    finally:
        if before is None:
            del os.environ[FORCE_WEIGHTS_ONLY]
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = before


def _refused_by_weights_only(folder: Path) -> str | None:
    """The first `.pt` file under `folder` (what DeepSpeed reads) that the weights-only unpickler refuses, and why."""
    import torch

    with weights_only():
        for path in sorted(folder.rglob("*.pt")):
            name = path.relative_to(folder).as_posix()
            if not zipfile.is_zipfile(path):  # DeepSpeed writes torch.save's zip format; mmap needs it too
                return f"{name} is not a torch.save archive"
            try:
                # mmap: the unpickler sees every object, while tensor bytes stay on disk.
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # noqa: BLE001 - whatever the unpickler refuses, the checkpoint is unusable
                found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
                why = f"it would call {found.group(1)}" if found else type(exc).__name__
                return f"{name} is refused by the weights-only loader ({why})"
    return None


def _manifest_problem(path: Path, doc: dict[str, Any], job: str, key: bytes | None) -> str | None:
    """What is wrong with one parsed manifest on its own: its name, its signature, the job that wrote it."""
    if path.name != f"{MANIFEST_PREFIX}{int(doc['rank'])}.json":
        return f"{path.name} claims rank {doc['rank']}"
    if key is not None:
        if SIGNATURE not in doc:
            return f"{path.name} is not signed (cluster.checkpoint_key is set)"
        if not hmac.compare_digest(str(doc[SIGNATURE]), _signature(doc, key)):
            return f"{path.name} has a bad signature (altered, or signed with another key)"
    if doc.get("job", job) != job:
        return f"{path.name} was written by job '{doc['job']}', not '{job}'"
    return None


def verify(folder: Path, world_size: int, job: str, key: bytes | None) -> str | None:
    """What is wrong with the checkpoint of job `job` in `folder` (None: nothing): every rank's manifest must be
    there (and signed with `key`, unless None), every file it lists must have its size and hash, no other file may
    be there, and every `.pt` file must load weights-only. A checkpoint written by another number of workers is a
    UserError (ZeRO splits optimizer state per worker, so DeepSpeed cannot load it), not a reason to fall back."""
    manifests = sorted(folder.glob(f"{MANIFEST_PREFIX}*.json"))
    if not manifests:
        return "no manifest (written before manifests existed, or truncated)"
    try:
        docs = [json.loads(p.read_text()) for p in manifests]
        problems = [_manifest_problem(p, d, job, key) for p, d in zip(manifests, docs, strict=True)]
        written_by = {int(d["world_size"]) for d in docs}
        ranks = {int(d["rank"]) for d in docs}
        files = [(name, int(meta["size"]), str(meta["sha256"])) for d in docs for name, meta in d["files"].items()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable manifest ({type(exc).__name__}: {exc})"
    if any(problems):
        return next(filter(None, problems))
    if len(written_by) != 1:
        return f"manifests disagree on the number of workers ({sorted(written_by)})"
    (saved_world,) = written_by
    if saved_world != world_size:
        raise UserError(
            f"checkpoint '{folder}': written by {saved_world} workers, this run has {world_size} "
            "(cluster.num_workers): expected the same number, since ZeRO splits optimizer state per worker"
        )
    missing, extra = sorted(set(range(saved_world)) - ranks), sorted(ranks - set(range(saved_world)))
    if missing:
        return f"no manifest of rank(s) {missing} (incomplete upload)"
    if extra:
        return f"manifest of rank(s) {extra} in a checkpoint of {saved_world} workers (planted?)"
    for name, size, digest in files:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, expected {size} (truncated?)"
        if _sha256(path) != digest:
            return f"{name} does not match its SHA-256 (corrupt or swapped)"
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    unlisted = sorted(present - {p.name for p in manifests} - {name for name, *_ in files})
    if unlisted:
        return f"{unlisted[0]} is in no manifest (planted?)"
    refused = _refused_by_weights_only(folder)
    if refused is not None:
        return refused
    try:
        TrainState(**json.loads((folder / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        return f"{STATE_FILE} unreadable ({type(exc).__name__})"
    return None


def run_checkpoints(cfg: Config) -> list[Any]:
    """The checkpoint folders of this run in storage (local or S3), newest first, as `ray.train.Checkpoint`s."""
    import ray.train
    from pyarrow import fs

    folder, filesystem = job_folder(cfg)
    selector = fs.FileSelector(folder, allow_not_found=True)
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


def _in_job_folder(checkpoint: Any, folder: str, filesystem: Any) -> Any | None:
    """`checkpoint` (one Ray reports) as a checkpoint in the job's `folder` on the job's `filesystem`, or None when
    its path lies elsewhere (Ray takes it from a snapshot in storage, which whoever can write there can edit)."""
    import ray.train

    path = posixpath.normpath(checkpoint.path)
    inside = posixpath.dirname(path) == posixpath.normpath(folder)
    if not (inside and posixpath.basename(path).startswith(CHECKPOINT_PREFIX)):
        return None
    return ray.train.Checkpoint(path=path, filesystem=filesystem)


def restore(cfg: Config, engine: Any, disc_engine: Any | None) -> TrainState:
    """Load the latest usable checkpoint of the run into the engines → its `TrainState` (fresh if none exists).

    The latest is the one Ray Train reports, if it lies in this job's folder; if it fails verification, the run's
    earlier checkpoints in storage are tried newest first. None usable → `CheckpointError` (starting over would
    silently discard the run)."""
    import ray.train
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    key = checkpoint_key(cfg)
    if key is None and (not distributed or dist.get_rank() == 0):
        log.warning("cluster.checkpoint_key is not set (%s): checkpoint manifests are not signed, so a checkpoint "
                    "rewritten in storage is not told from the job's own (its files still load weights-only)",
                    ENV_FIELDS["cluster.checkpoint_key"][0])
    reported = ray.train.get_checkpoint()
    if reported is None:
        return TrainState()
    world = dist.get_world_size() if distributed else 1
    folder, filesystem = job_folder(cfg)
    own = run_checkpoints(cfg)
    latest = _in_job_folder(reported, folder, filesystem)
    if latest is None:
        log.warning("checkpoint %s reported by Ray lies outside this job's folder %s; ignored, trying the job's own",
                    reported.path, folder)
        candidates = own
    else:
        candidates = [latest, *(c for c in own if _name(c) < _name(latest))]
    problems = []
    for i, checkpoint in enumerate(candidates):
        with checkpoint.as_directory() as local:
            problem = _agree(verify(Path(local), world, cfg.cluster.name, key))
            if problem is None:
                with weights_only():
                    engine.load_checkpoint(local, tag=MODEL_TAG)
                    if disc_engine is not None:
                        disc_engine.load_checkpoint(local, tag=DISC_TAG)
                state = TrainState(**json.loads((Path(local) / STATE_FILE).read_text()))
                log.info("resumed from %s at epoch %d, step %d", checkpoint.path, state.epoch, state.step)
                return state
        problems.append(f"{checkpoint.path}: {problem}")
        nxt = f"falling back to {candidates[i + 1].path}" if i + 1 < len(candidates) else "no earlier checkpoint"
        log.warning("checkpoint %s is unusable (%s); %s", checkpoint.path, problem, nxt)
    raise CheckpointError(f"no usable checkpoint of job '{cfg.cluster.name}' in {folder}: "
                          + ("; ".join(problems) or "none there"))


def checkpoint_uploader(cfg: Config) -> Callable[[Any, str], Any]:
    """Ray Train `checkpoint_upload_fn`: copy a rank's checkpoint folder into the run's folder in storage, retried
    with exponential backoff (storage.retries times from storage.backoff seconds) when storage fails."""
    from reid3dsl.data.s3 import backoff_s, retry

    def upload(checkpoint: Any, dir_name: str) -> Any:
        import ray.train
        from pyarrow import fs

        folder, filesystem = job_folder(cfg)
        dest = f"{folder}/{dir_name}"

        def copy() -> None:
            filesystem.create_dir(dest)
            # One thread: pyarrow's threaded uploads to S3 are unsafe (apache/arrow#32372, as Ray notes too).
            fs.copy_files(checkpoint.path, dest, source_filesystem=checkpoint.filesystem,
                          destination_filesystem=filesystem, use_threads=False)

        retry(copy, cfg.storage.retries, lambda a: backoff_s(cfg.storage, a), f"upload of checkpoint {dest}")
        return ray.train.Checkpoint(path=dest, filesystem=filesystem)

    return upload


def write_checkpoint(cfg: Config, engine: Any, disc_engine: Any | None, state: TrainState, folder: Path) -> None:
    """This rank's part of a checkpoint into `folder`: its shards of both engines, the loop state (rank 0) and its
    manifest. Every rank calls it (DeepSpeed's saving is collective)."""
    import torch.distributed as dist

    engine.save_checkpoint(str(folder), tag=MODEL_TAG)
    if disc_engine is not None:
        disc_engine.save_checkpoint(str(folder), tag=DISC_TAG)
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        (folder / STATE_FILE).write_text(json.dumps(asdict(state)))
    write_manifest(folder, rank, world, cfg.cluster.name, checkpoint_key(cfg))


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
        write_checkpoint(cfg, engine, disc_engine, state, Path(tmp))
        dist.barrier()
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_upload_fn=checkpoint_uploader(cfg))
