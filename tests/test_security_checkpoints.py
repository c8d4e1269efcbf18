"""Checkpoints from storage are not trusted: a file with the wrong hash, a missing manifest, a bad or missing
signature, another job's checkpoint, a planted file, a pickle that would run code, and a checkpoint Ray reports
outside the job's folder are each refused in one warning, and the run resumes from its previous checkpoint; no
code in a checkpoint ever runs. Tiny DeepSpeed engines (ZeRO-1, as the job's) in one process; `restore` is given
the checkpoint Ray would report. (A real job's resume with signed manifests: test_fault_worker_death.)"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from reid3dsl.config import Config, load_config
from reid3dsl.precision import resolve_precision
from reid3dsl.train.checkpoint import (
    CheckpointError,
    TrainState,
    restore,
    verify,
    weights_only,
    write_checkpoint,
)
from reid3dsl.train.loop import deepspeed_config

KEY, OTHER_KEY = "checkpoint-test-key-0123456789abcdef", "another-key-0123456789abcdef0123"
OPTIM = "model/zero_pp_rank_0_mp_rank_00_optim_states.pt"
MODEL = "model/mp_rank_00_model_states.pt"


@dataclass
class Engines:
    network: Any
    discriminator: Any


@pytest.fixture(scope="module")
def engines(process_group: None) -> Engines:
    """A network and a discriminator engine as the job builds them (client Adam, LR schedule, ZeRO-1, fp32)."""
    import deepspeed

    cfg = load_config(None, [], env={})
    made = []
    for width in (4, 3):
        module = torch.nn.Linear(width, 2)
        optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
        engine, *_ = deepspeed.initialize(
            model=module, optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0),
            config=deepspeed_config(cfg, resolve_precision("fp32", torch.device("cpu")), 2))
        made.append(engine)
    return Engines(*made)


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """The project's warnings logged during the test (its loggers stop propagating once logging is set up)."""
    monkeypatch.setattr(logging.getLogger("reid3dsl"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="reid3dsl")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _config(tmp_path: Path, key: str | None, name: str = "job") -> Config:
    env = {"REID3DSL_CHECKPOINT_KEY": key} if key else {}
    return load_config(None, [f"cluster.storage_path={tmp_path / 'runs'}", f"cluster.name={name}"], env=env)


def _save(cfg: Config, engines: Engines, epoch: int) -> Path:
    """A checkpoint of the engines after `epoch` (one optimizer step later than the previous), where Ray puts it."""
    for engine in (engines.network, engines.discriminator):
        engine.backward(engine(torch.ones(2, engine.module.in_features)).sum())
        engine.step()
    folder = Path(cfg.cluster.storage_path) / cfg.cluster.name / f"checkpoint_2026-01-0{epoch}_00-00-00.000000"
    folder.mkdir(parents=True)
    write_checkpoint(cfg, engines.network, engines.discriminator, TrainState(epoch=epoch, step=10 * epoch), folder)
    return folder


def _restore(cfg: Config, engines: Engines, reported: Path, monkeypatch: pytest.MonkeyPatch) -> TrainState:
    """`restore` in a worker to which Ray reports the checkpoint at `reported`."""
    import ray.train
    from pyarrow import fs

    monkeypatch.setattr(ray.train, "get_checkpoint",
                        lambda: ray.train.Checkpoint(path=str(reported), filesystem=fs.LocalFileSystem()))
    return restore(cfg, engines.network, engines.discriminator)


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest-rank0.json").read_text())


def _relist(folder: Path, name: str) -> None:
    """Rewrite the manifest's entry for `name` to match the file as it is now, as someone without the key can."""
    data = (folder / name).read_bytes()
    doc = _manifest(folder)
    doc["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest-rank0.json").write_text(json.dumps(doc))


class Payload:
    """Unpickling it calls `exec`, which writes `marker`: what a crafted checkpoint file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _flip_a_byte(latest: Path, previous: Path) -> None:
    data = bytearray((latest / OPTIM).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (latest / OPTIM).write_bytes(bytes(data))


def _drop_manifest(latest: Path, previous: Path) -> None:
    (latest / "manifest-rank0.json").unlink()


def _swap_and_relist(latest: Path, previous: Path) -> None:
    shutil.copy(previous / OPTIM, latest / OPTIM)  # an older optimizer state under the new weights
    _relist(latest, OPTIM)


def _strip_signature(latest: Path, previous: Path) -> None:
    _swap_and_relist(latest, previous)
    doc = _manifest(latest)
    del doc["hmac"]
    (latest / "manifest-rank0.json").write_text(json.dumps(doc))


def _plant_a_file(latest: Path, previous: Path) -> None:
    (latest / "model" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes((latest / OPTIM).read_bytes())


# (tampering, key the job holds, what the one warning must say)
CASES = {
    "wrong_hash": (_flip_a_byte, KEY, f"{OPTIM} does not match its SHA-256"),
    "wrong_hash_unsigned": (_flip_a_byte, None, f"{OPTIM} does not match its SHA-256"),
    "missing_manifest": (_drop_manifest, KEY, "no manifest"),
    "bad_signature": (_swap_and_relist, KEY, "manifest-rank0.json has a bad signature"),
    "unsigned_manifest": (_strip_signature, KEY, "manifest-rank0.json is not signed"),
    "planted_file": (_plant_a_file, KEY, "model/zero_pp_rank_1_mp_rank_00_optim_states.pt is in no manifest"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_tampered_latest_checkpoint_is_refused_in_one_warning_and_the_previous_one_resumes(
    case: str, engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings: Callable[[], list[str]]
) -> None:
    tamper, key, reason = CASES[case]
    cfg = _config(tmp_path, key)
    previous, latest = _save(cfg, engines, 1), _save(cfg, engines, 2)
    assert verify(latest, 1, "job", key and key.encode()) is None
    tamper(latest, previous)

    state = _restore(cfg, engines, latest, monkeypatch)

    assert (state.epoch, state.step) == (1, 10)
    unusable = [w for w in warnings() if "is unusable" in w]
    assert len(unusable) == 1, warnings()
    assert latest.name in unusable[0] and reason in unusable[0] and f"falling back to {previous}" in unusable[0]


@pytest.mark.parametrize(("zip_format", "reason"), [
    (True, "is refused by the weights-only loader (it would call exec)"),
    (False, "is not a torch.save archive"),  # torch's legacy format
])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(
    zip_format: bool, reason: str, engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    warnings: Callable[[], list[str]]
) -> None:
    """Without a key the manifest can be rewritten to match the planted file: the weights-only loader refuses it."""
    cfg = _config(tmp_path, None)
    previous, latest = _save(cfg, engines, 1), _save(cfg, engines, 2)
    marker = tmp_path / "code-ran"
    torch.save({"module": Payload(marker)}, latest / MODEL, _use_new_zipfile_serialization=zip_format)
    _relist(latest, MODEL)

    state = _restore(cfg, engines, latest, monkeypatch)

    assert state.epoch == 1 and not marker.exists()
    unusable = [w for w in warnings() if "is unusable" in w]
    assert len(unusable) == 1 and f"{MODEL} {reason}" in unusable[0], warnings()
    assert len([w for w in warnings() if "checkpoint_key is not set" in w]) == 1
    assert "hmac" not in _manifest(previous)

    # DeepSpeed's own loads are weights-only too, should a file change after it was checked.
    with pytest.raises((pickle.UnpicklingError, RuntimeError)), weights_only():
        engines.network.load_checkpoint(str(latest), tag="model")
    assert not marker.exists()
    torch.load(latest / MODEL, weights_only=False)  # the payload is live: plain pickle runs it
    assert marker.read_text() == "ran"


def test_another_jobs_checkpoint_is_refused_in_its_folder_and_ignored_outside_it(
    engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings: Callable[[], list[str]]
) -> None:
    """Signed with the same key (jobs on one cluster share it), another job's checkpoint still is not this one's."""
    cfg, other = _config(tmp_path, KEY), _config(tmp_path, KEY, name="other")
    _save(cfg, engines, 1)
    latest = _save(cfg, engines, 2)
    foreign = _save(other, engines, 3)

    # Ray reports a checkpoint outside the job's folder (its snapshot in storage was edited): the job's own latest.
    for reported in (foreign, tmp_path / "runs" / "job" / ".." / "other" / foreign.name):
        state = _restore(cfg, engines, reported, monkeypatch)
        assert state.epoch == 2
    outside = [w for w in warnings() if "outside this job's folder" in w]
    assert len(outside) == 2 and len(warnings()) == 2, warnings()

    # Copied into the job's folder as its newest checkpoint: refused by the job name its manifests carry.
    shutil.rmtree(latest)
    shutil.copytree(foreign, latest)
    state = _restore(cfg, engines, latest, monkeypatch)
    assert state.epoch == 1
    assert "manifest-rank0.json was written by job 'other', not 'job'" in warnings()[-1], warnings()


def test_a_checkpoint_signed_with_another_key_is_refused_and_none_usable_stops_the_run(
    engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous, latest = _save(_config(tmp_path, OTHER_KEY), engines, 1), _save(_config(tmp_path, OTHER_KEY), engines, 2)
    with pytest.raises(CheckpointError) as stopped:
        _restore(_config(tmp_path, KEY), engines, latest, monkeypatch)
    message = str(stopped.value)
    assert f"{latest}: manifest-rank0.json has a bad signature" in message
    assert f"{previous}: manifest-rank0.json has a bad signature" in message
    assert KEY not in message and OTHER_KEY not in message
