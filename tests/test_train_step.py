"""One training step, in one process under DeepSpeed: which parts move, which losses exist, what is built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from reid3dsl.config import Config, load_config
from reid3dsl.precision import resolve_precision
from reid3dsl.train.checkpoint import TrainState
from reid3dsl.train.components import Components, build_components
from reid3dsl.train.loop import init_engines, train_step

CPU = torch.device("cpu")


def _config(root: str, body_dir: str, *overrides: str) -> Config:
    return load_config(
        "configs/smoke.yaml",
        [f"data.root={root}", "data.synthesize=false", f"body.standin_dir={body_dir}", "train.batch_size=8",
         "data.imgs_per_id=2", *overrides],
    )


def _snapshot(module: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    return {} if module is None else {k: v.detach().clone() for k, v in module.named_parameters()}


def _moved(before: dict[str, torch.Tensor], module: torch.nn.Module, prefix: str) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters() if k.startswith(prefix))


@pytest.fixture
def root(toy_shards: Callable[..., str], tmp_path: Path) -> str:
    """The toy shards every step here trains on: 8 identities x 6 images at 64x32."""
    return toy_shards(tmp_path / "toy", ids=8, per_id=6, splits=("train", "query", "gallery"), size=(64, 32))


def _step(cfg: Config, precision_name: str = "fp32") -> tuple[Components, dict[str, float] | None, dict, dict]:
    parts = build_components(cfg, CPU, 0, 1, None)
    precision = resolve_precision(precision_name, CPU)
    engine, disc_engine = init_engines(cfg, parts, precision, 1)
    before = _snapshot(engine.module)
    d_before = _snapshot(disc_engine.module if disc_engine is not None else None)
    batch = next(parts.train_batches)
    metrics = train_step(cfg, parts, engine, disc_engine, batch, precision, TrainState(),
                         torch.Generator().manual_seed(0))
    return parts, metrics, before, d_before


def test_rgb_only_builds_no_3d_parts_and_runs_no_renderer(
    process_group: None, root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reid3dsl.body.render as render

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a renderer ran in an RGB-only model")

    monkeypatch.setattr(render.SilhouetteRenderer, "render", forbidden)
    cfg = _config(root, str(tmp_path / "body"), "model.streams=rgb")
    parts, metrics, before, _ = _step(cfg)
    assert parts.network.shape is None and parts.discriminator is None and parts.prior is None
    assert not parts.network.switches.has_3d and parts.network.body is None
    assert not (tmp_path / "body").exists(), "the stand-in body was generated for an RGB-only model"
    assert metrics is not None and set(metrics) == {"loss/ce_rgb", "loss/triplet_rgb", "loss/total"}
    assert _moved(before, parts.network, "rgb.")


def test_one_iteration_moves_both_streams_and_the_discriminator(
    process_group: None, root: str, standin_dir: str
) -> None:
    cfg = _config(root, standin_dir)
    parts = build_components(cfg, CPU, 0, 1, None)
    precision = resolve_precision("fp32", CPU)
    engine, disc_engine = init_engines(cfg, parts, precision, 1)
    assert disc_engine is not None
    before, d_before = _snapshot(engine.module), _snapshot(disc_engine.module)
    fixed_real = parts.prior.sample(8, torch.Generator().manual_seed(1))
    fixed_fake = parts.prior.sample(8, torch.Generator().manual_seed(2))
    fixed_fake = (fixed_fake[0].transpose(-1, -2), fixed_fake[1] * 3)  # far from the prior

    def d_loss() -> float:
        with torch.no_grad():
            return float(parts.objective.discriminator_loss(disc_engine.module, fixed_real, fixed_fake))

    d_start = d_loss()
    metrics = train_step(cfg, parts, engine, disc_engine, next(parts.train_batches), precision, TrainState(),
                         torch.Generator().manual_seed(0))
    assert metrics is not None
    expected = {"ce_rgb", "triplet_rgb", "ce_shape", "triplet_shape", "keypoint", "silhouette", "displacement",
                "adversarial", "total", "discriminator"}
    assert {k.removeprefix("loss/") for k in metrics} == expected
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert _moved(before, parts.network, "rgb.")
    assert _moved(before, parts.network, "shape.trunk.")
    assert _moved(before, parts.network, "shape.pose.")
    assert _moved(before, parts.network, "shape.shape.")
    assert any(not torch.equal(d_before[k], v) for k, v in disc_engine.module.named_parameters())
    assert d_loss() != d_start


def test_bf16_step_keeps_fp32_master_weights_and_finite_losses(
    process_group: None, root: str, standin_dir: str
) -> None:
    cfg = _config(root, standin_dir, "model.shape_feat_dim=16", "train.precision=bf16")
    parts, metrics, before, _ = _step(cfg, "bf16")
    assert metrics is not None and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert all(p.dtype == torch.float32 for p in parts.network.parameters())
    assert _moved(before, parts.network, "rgb.") and _moved(before, parts.network, "shape.")


def test_with_the_body_proxy_input_the_3d_stream_trains_on_silhouette_and_keypoints_only(
    process_group: None, root: str, standin_dir: str
) -> None:
    from reid3dsl.data.transforms import body_proxy

    cfg = _config(root, standin_dir, "data.shape_input=proxy")
    parts, metrics, before, _ = _step(cfg)
    assert metrics is not None and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert _moved(before, parts.network, "shape.trunk.") and _moved(before, parts.network, "rgb.")
    batch = next(parts.train_batches)
    shape_input = batch["shape_image"]
    assert shape_input.shape[1:] == (3, cfg.data.shape_height, cfg.data.shape_width)
    # Channels 1-2 are exactly the heatmaps of the batch's keypoints; channel 0 a silhouette in [0, 1].
    for proxy, kp in zip(shape_input, batch["keypoints"], strict=True):
        assert torch.allclose(proxy[1:], body_proxy(proxy[0], kp)[1:])
    assert shape_input.min() >= 0 and shape_input.max() <= 1


def test_in_the_assp_warm_up_the_3d_stream_has_no_identity_terms(
    process_group: None, root: str, standin_dir: str
) -> None:
    cfg = _config(root, standin_dir, "train.assp_epochs=1")
    parts, metrics, before, _ = _step(cfg)
    assert metrics is not None
    assert {k.removeprefix("loss/") for k in metrics} == {"ce_rgb", "triplet_rgb", "keypoint", "silhouette",
                                                          "displacement", "adversarial", "total", "discriminator"}
    assert _moved(before, parts.network, "shape.trunk.") and _moved(before, parts.network, "rgb.")
