"""Bad numbers: a NaN/Inf loss term or gradient skips the step for both engines (the network's and the
discriminator's) and is counted; `train.max_bad_steps` such steps in a row abort, naming what went bad first.
One process under DeepSpeed; the faults are injected into a batch and into gradients (tensor hooks). Then two
Ray workers, each with a fault the other does not have: both skip the same steps, and the samples skipped for
corrupt data add up over the ranks to those planted in the shards (`data/skipped`)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_data_corrupt import rewrite_members

from reid3dsl.config import Config, StorageConfig, load_config
from reid3dsl.data.index import load_index
from reid3dsl.precision import Precision, resolve_precision
from reid3dsl.train.checkpoint import TrainState
from reid3dsl.train.components import Components, build_components
from reid3dsl.train.loop import init_engines, sum_over_ranks, train_step

CPU = torch.device("cpu")
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, toy_shards: Callable[..., str]) -> str:
    return toy_shards(tmp_path_factory.mktemp("nan") / "toy", ids=8, per_id=6, size=(64, 32))


def _setup(root: str, body_dir: str, *overrides: str, rank: int = 0,
           world: int = 1) -> tuple[Config, Components, Any, Any, Precision]:
    cfg = load_config(SMOKE, [
        f"data.root={root}", "data.synthesize=false", f"body.standin_dir={body_dir}", "train.batch_size=8",
        "data.imgs_per_id=2", "loss.silhouette_fraction=0.25", *overrides,
    ])
    parts = build_components(cfg, CPU, rank, world, None)
    precision = resolve_precision(cfg.train.precision, CPU)
    engine, disc_engine = init_engines(cfg, parts, precision, world)
    return cfg, parts, engine, disc_engine, precision


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _same(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(before[k], v) for k, v in module.named_parameters())


def _step(cfg: Config, parts: Components, engine: Any, disc_engine: Any, precision: Precision, state: TrainState,
          batch: dict[str, Any] | None = None) -> dict[str, float] | None:
    return train_step(cfg, parts, engine, disc_engine, batch or next(parts.train_batches), precision, state,
                      torch.Generator().manual_seed(state.step))


def _poison(param: torch.nn.Parameter) -> Any:
    """Make autograd's gradient of `param` NaN (a hook that replaces it) → the handle that removes the fault."""
    return param.register_hook(lambda grad: torch.full_like(grad, float("nan")))


@pytest.mark.parametrize(("engine_name", "precision", "zero_stage"), [
    ("network", "fp32", 1), ("network", "fp32", 0), ("network", "bf16", 1), ("discriminator", "fp32", 1),
])
def test_a_non_finite_gradient_skips_the_step_for_both_engines_and_leaves_no_trace(
    process_group: None, data_root: str, standin_dir: str, precision: str, zero_stage: int,
    engine_name: str,
) -> None:
    cfg, parts, engine, disc_engine, prec = _setup(data_root, standin_dir, f"train.precision={precision}",
                                                   f"train.zero_stage={zero_stage}")
    state = TrainState()
    before, d_before = _params(engine.module), _params(disc_engine.module)
    target = engine.module if engine_name == "network" else disc_engine.module
    fault = _poison(next(p for p in target.parameters() if p.requires_grad))
    state.step += 1
    assert _step(cfg, parts, engine, disc_engine, prec, state) is None
    fault.remove()
    assert state.skipped_steps == 1 and state.bad_in_a_row == 1 and state.first_bad == f"grad/{engine_name}"
    assert _same(before, engine.module), "the network moved on a step with non-finite gradients"
    assert _same(d_before, disc_engine.module), "the discriminator moved on a step with non-finite gradients"

    # The next, healthy step updates both from clean gradients: nothing of the bad step is left in DeepSpeed.
    state.step += 1
    metrics = _step(cfg, parts, engine, disc_engine, prec, state)
    assert metrics is not None and state.bad_in_a_row == 0 and state.skipped_steps == 1
    assert not _same(before, engine.module) and not _same(d_before, disc_engine.module)
    for module in (engine.module, disc_engine.module):
        assert all(torch.isfinite(p).all() for p in module.parameters())


def test_non_finite_loss_steps_are_skipped_and_a_streak_aborts_naming_the_first_bad_term(
    process_group: None, data_root: str, standin_dir: str
) -> None:
    cfg, parts, engine, disc_engine, prec = _setup(data_root, standin_dir, "train.max_bad_steps=3")
    state = TrainState()
    before, d_before = _params(engine.module), _params(disc_engine.module)
    bad = next(parts.train_batches)
    bad["keypoints"] = bad["keypoints"].clone()
    bad["keypoints"][0, :, 0] = float("nan")  # one image's detected keypoints are garbage
    state.step += 1
    assert _step(cfg, parts, engine, disc_engine, prec, state, bad) is None
    assert state.first_bad == "loss/keypoint" and state.skipped_steps == 1
    assert _same(before, engine.module) and _same(d_before, disc_engine.module)

    state.step += 1
    assert _step(cfg, parts, engine, disc_engine, prec, state) is not None  # a good step ends the streak
    assert state.bad_in_a_row == 0 and state.skipped_steps == 1

    # A streak: first the keypoints, then an infinite gradient; the third bad step in a row aborts.
    state.step += 1
    assert _step(cfg, parts, engine, disc_engine, prec, state, bad) is None
    fault = _poison(next(engine.module.parameters()))
    state.step += 1
    assert _step(cfg, parts, engine, disc_engine, prec, state) is None
    with pytest.raises(FloatingPointError, match=r"3 non-finite steps in a row \(first bad: loss/keypoint, at step 3"):
        state.step += 1
        _step(cfg, parts, engine, disc_engine, prec, state)
    fault.remove()
    assert state.skipped_steps == 4



# Corrupt images planted in the two training shards (one per rank): within the first 64 samples each rank reads,
# which its shuffle buffer (64) reads before the first batch, and far from the end of its 120-sample shard.
PLANTED = ("train/001_03.jpg", "train/002_05.jpg", "train/005_03.jpg", "train/006_05.jpg")


def _digest(*modules: torch.nn.Module) -> str:
    """One hash of every parameter of `modules`: equal digests, equal weights."""
    sha = hashlib.sha256()
    for module in modules:
        for p in module.parameters():
            sha.update(p.detach().cpu().numpy().tobytes())
    return sha.hexdigest()


def _two_rank_worker(config: dict[str, Any]) -> None:
    """One of two Ray Train workers: four steps; rank 1's batch has NaN keypoints in step 2, rank 0's network
    gradients are NaN in step 3. Writes what this rank saw to `config["out"]/rank<r>.json`."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    cfg, parts, engine, disc_engine, prec = _setup(config["root"], config["body"], rank=rank, world=2)
    state, skipped, applied, digests = TrainState(), 0, [], []
    for step in range(1, 5):
        batch = next(parts.train_batches)
        skipped += int(batch["skipped"])  # as the loop counts data/skipped
        fault = None
        if step == 2 and rank == 1:
            batch["keypoints"] = batch["keypoints"].clone()
            batch["keypoints"][0, :, 0] = float("nan")
        if step == 3 and rank == 0:
            fault = _poison(next(p for p in engine.module.parameters() if p.requires_grad))
        state.step = step
        applied.append(_step(cfg, parts, engine, disc_engine, prec, state, batch) is not None)
        if fault is not None:
            fault.remove()
        digests.append(_digest(engine.module, disc_engine.module))
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps({
        "applied": applied, "skipped_steps": state.skipped_steps, "first_bad": state.first_bad,
        "digests": digests, "data_skipped": sum_over_ranks(skipped),
    }))


@pytest.fixture(scope="module")
def two_ranks(
    ray_local: None, tmp_path_factory: pytest.TempPathFactory, toy_shards: Callable[..., str], standin_dir: str
) -> list[dict[str, Any]]:
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    tmp = tmp_path_factory.mktemp("two-ranks")
    root = toy_shards(tmp / "toy", ids=8, per_id=30, shard_size=120, size=(64, 32))
    shards = load_index(root, StorageConfig()).split("train").shards
    assert len(shards) == 2
    for shard in shards:
        rewrite_members(Path(shard.url), lambda name, data: b"not a jpeg" if name in PLANTED else data)
    out = tmp / "out"
    out.mkdir()
    # Ray's workers cannot import this test module: its functions travel by value.
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    try:
        TorchTrainer(
            _two_rank_worker, train_loop_config={"root": root, "body": standin_dir, "out": str(out)},
            scaling_config=ray.train.ScalingConfig(num_workers=2, use_gpu=False),
            run_config=ray.train.RunConfig(name="two-ranks", storage_path=str(tmp / "ray")),
        ).fit()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_a_non_finite_step_on_one_of_two_ranks_is_skipped_on_both_and_skipped_samples_add_up(
    two_ranks: list[dict[str, Any]]
) -> None:
    for rank in two_ranks:
        assert rank["applied"] == [True, False, False, True], "a rank updated on a step another skipped"
        assert rank["skipped_steps"] == 2 and rank["first_bad"] == "loss/keypoint"
        digests = rank["digests"]
        assert digests[0] == digests[1] == digests[2] != digests[3], "weights moved on a skipped step"
    assert two_ranks[0]["digests"] == two_ranks[1]["digests"], "the ranks' weights drifted apart"
    assert two_ranks[0]["data_skipped"] == two_ranks[1]["data_skipped"] == len(PLANTED)
