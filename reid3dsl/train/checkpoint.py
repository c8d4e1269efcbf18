"""Checkpoints through Ray Train: every rank saves its DeepSpeed shard of both engines into a local folder,
rank 0 adds the loop state, and `ray.train.report` merges the folders into one checkpoint in storage.
On start, the latest checkpoint (if any) restores both engines and the loop state."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
STATE_FILE = "train_state.json"
MODEL_TAG = "model"
DISC_TAG = "discriminator"


@dataclass
class TrainState:
    """Where the loop is: epochs done, optimizer steps attempted, steps skipped for non-finite losses."""

    epoch: int = 0
    step: int = 0
    skipped_steps: int = 0
    bad_in_a_row: int = 0


def restore(engine: Any, disc_engine: Any | None) -> TrainState:
    """Load the latest Ray Train checkpoint into the engines → its `TrainState` (a fresh one if none)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as folder:
        engine.load_checkpoint(folder, tag=MODEL_TAG)
        if disc_engine is not None:
            disc_engine.load_checkpoint(folder, tag=DISC_TAG)
        state = TrainState(**json.loads((Path(folder) / STATE_FILE).read_text()))
    log.info("resumed from %s at epoch %d, step %d", checkpoint.path, state.epoch, state.step)
    return state


def save_and_report(engine: Any, disc_engine: Any | None, state: TrainState, metrics: dict[str, Any],
                    checkpoint: bool) -> None:
    """`ray.train.report(metrics)` on every rank, with a checkpoint of both engines when `checkpoint`."""
    import ray.train
    import torch.distributed as dist

    if not checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        engine.save_checkpoint(folder, tag=MODEL_TAG)
        if disc_engine is not None:
            disc_engine.save_checkpoint(folder, tag=DISC_TAG)
        if dist.get_rank() == 0:
            (Path(folder) / STATE_FILE).write_text(json.dumps(asdict(state)))
        dist.barrier()
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
