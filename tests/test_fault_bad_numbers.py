"""Bad numbers: a NaN/Inf loss term or gradient skips the step for both engines (the network's and the
discriminator's) and is counted; `train.max_bad_steps` such steps in a row abort, naming what went bad first.
One process under DeepSpeed; the faults are injected into a batch and into gradients (tensor hooks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from reid3dsl.config import Config, load_config
from reid3dsl.precision import Precision, resolve_precision
from reid3dsl.train.checkpoint import TrainState
from reid3dsl.train.components import Components, build_components
from reid3dsl.train.loop import init_engines, train_step

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, toy_shards: Callable[..., str]) -> str:
    return toy_shards(tmp_path_factory.mktemp("nan") / "toy", ids=8, per_id=6, size=(64, 32))


def _setup(root: str, body_dir: str, *overrides: str) -> tuple[Config, Components, Any, Any, Precision]:
    cfg = load_config("configs/smoke.yaml", [
        f"data.root={root}", "data.synthesize=false", f"body.standin_dir={body_dir}", "train.batch_size=8",
        "data.imgs_per_id=2", "loss.silhouette_fraction=0.25", *overrides,
    ])
    parts = build_components(cfg, CPU, 0, 1, None)
    precision = resolve_precision(cfg.train.precision, CPU)
    engine, disc_engine = init_engines(cfg, parts, precision, 1)
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

