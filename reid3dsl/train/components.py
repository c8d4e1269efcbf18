"""Everything a worker trains with, built from the config in one place: data stream, body model, renderer,
pose prior, network, discriminator, optimizers, schedule and the objective — plus evaluation and the
final export, which need the same pieces."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reid3dsl.config import Config
from reid3dsl.train.objective import Objective, Projection
from reid3dsl.train.precision import Precision
from reid3dsl.train.schedule import lr_factor

log = logging.getLogger(__name__)


@dataclass
class BodyParts:
    """The 3D side: body model, renderer, prior and the pieces of the network built from the body."""

    body: nn.Module
    renderer: Any
    prior: Any
    mean_pose: torch.Tensor
    part_groups: list[torch.Tensor] | None


def build_body(cfg: Config, device: torch.device) -> BodyParts:
    """Body model, silhouette renderer (if the silhouette term is on), prior and the MGS vertex groups."""
    from reid3dsl.body.constants import UPRIGHT_FACING_CAMERA
    from reid3dsl.body.prior import load_prior
    from reid3dsl.body.render import SilhouetteRenderer
    from reid3dsl.body.smpld import load_body_model
    from reid3dsl.models.shape import mean_rotation, stripe_vertex_groups

    body = load_body_model(cfg.body).to(device)
    renderer = SilhouetteRenderer(cfg.body) if cfg.loss.silhouette else None
    prior = load_prior(cfg.body)
    # The regressor starts from the prior's mean body pose, standing upright and facing the camera.
    rotmats, _ = prior.sample(1024, torch.Generator().manual_seed(0))
    mean_pose = mean_rotation(rotmats.float().cpu())
    mean_pose[0] = torch.tensor(UPRIGHT_FACING_CAMERA)
    groups = stripe_vertex_groups(body.template.cpu(), cfg.model.num_parts) if cfg.model.mgs else None
    return BodyParts(body, renderer, prior, mean_pose, groups)


def build_network(cfg: Config, num_classes: int, body: BodyParts | None) -> nn.Module:
    """The two-stream network of `cfg.model` for `num_classes` training identities."""
    from reid3dsl.models.network import build_network as build

    if body is None:
        return build(cfg, num_classes)
    return build(cfg, num_classes, mean_pose=body.mean_pose, num_vertices=body.body.num_vertices,
                 part_groups=body.part_groups)


def init_shape_stream(network: nn.Module, path: str) -> None:
    """Start the 3D stream (E_3D, E_pose, E_shape) from the trained one in a model.pt — e.g. a 3D estimator
    trained with the projection losses alone — while its identity head starts anew (the classes may differ)."""
    from reid3dsl.errors import UserError
    from reid3dsl.train.evaluator import read_exported

    def estimator(key: str) -> bool:
        return key.startswith("shape.") and not key.startswith("shape.neck.")

    state = {k: v for k, v in read_exported(path)["state_dict"].items() if estimator(k)}
    wanted = {k for k in network.state_dict() if estimator(k)}
    if not wanted or set(state) != wanted:
        raise UserError(f"model.shape_init '{path}': its 3D stream does not match this one "
                        f"({len(set(state) ^ wanted)} differing tensors; same backbone, body model and MGS expected)")
    try:
        network.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UserError(f"model.shape_init '{path}': tensor sizes differ from this 3D stream ({exc})") from None
    log.info("3D stream initialised from %s", path)


def make_optimizer(cfg: Config, network: nn.Module) -> torch.optim.Optimizer:
    """One client optimizer (DeepSpeed takes one per engine) with two groups: the ReID parts at `train.lr`
    and the 3D estimator (E_3D, E_pose, E_shape) at `train.lr_3d`. No weight decay on norms and biases."""
    t = cfg.train
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in network.named_parameters():
        if not p.requires_grad:
            continue
        is_3d = name.startswith("shape.") and not name.startswith("shape.neck.")
        decay = p.ndim > 1
        groups.setdefault(("3d" if is_3d else "reid", decay), []).append(p)
    param_groups = [
        {"params": ps, "lr": t.lr_3d if kind == "3d" else t.lr, "weight_decay": t.weight_decay if decay else 0.0,
         "name": f"{kind}{'' if decay else '_no_decay'}"}
        for (kind, decay), ps in sorted(groups.items())
    ]
    if t.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.Adam(param_groups, lr=t.lr)


@dataclass
class Components:
    """What one worker trains with."""

    streams: frozenset[str]
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Callable[[torch.optim.Optimizer], Any]
    discriminator: nn.Module | None
    disc_optimizer: torch.optim.Optimizer | None
    prior: Any
    objective: Objective
    train_batches: Iterator[dict[str, Any]]
    evaluator: Any

    def evaluate(self, module: nn.Module, precision: Precision, final: bool) -> dict[str, float]:
        return self.evaluator.evaluate(module, precision, final)

    def finish(self, module: nn.Module, precision: Precision) -> None:
        self.evaluator.finish(module, precision)


def build_components(cfg: Config, device: torch.device, rank: int, world_size: int, run_id: str | None) -> Components:
    from reid3dsl.data.index import load_index
    from reid3dsl.data.pipeline import train_batches
    from reid3dsl.train.evaluator import Evaluator

    index = load_index(cfg.data.root, cfg.data)
    streams = frozenset({"rgb": {"rgb"}, "3d": {"shape"}, "both": {"rgb", "shape"}}[cfg.model.streams])
    body = build_body(cfg, device) if "shape" in streams else None
    network = build_network(cfg, index.num_classes, body)
    if body is not None and cfg.model.shape_init:
        init_shape_stream(network, cfg.model.shape_init)
    network = network.to(device)
    projection = None
    if body is not None:
        from reid3dsl.body.camera import normalized_focal

        projection = Projection(
            body=body.body, renderer=body.renderer, focal=normalized_focal(cfg.body.focal_length, cfg.body.focal_res),
            shape_size=(cfg.data.shape_height, cfg.data.shape_width),
            sil_size=(cfg.data.sil_height, cfg.data.sil_width),
        )
    has_clothes = bool(index.split("train").clothes)
    clothes_aware = {"on": True, "off": False, "auto": has_clothes}[cfg.loss.clothes_aware]
    discriminator = disc_optimizer = None
    if body is not None and cfg.loss.adversarial:
        from reid3dsl.models.discriminator import SMPLDiscriminator

        discriminator = SMPLDiscriminator(num_betas=cfg.body.num_betas).to(device)
        disc_optimizer = torch.optim.Adam(discriminator.parameters(), lr=cfg.train.lr_d, betas=(0.5, 0.999))
    factor = lr_factor(cfg.train)
    log.info("network: %.1fM parameters, %d training identities, streams %s, clothes-aware triplet %s",
             sum(p.numel() for p in network.parameters()) / 1e6, index.num_classes, sorted(streams), clothes_aware)
    return Components(
        streams=streams,
        network=network,
        optimizer=make_optimizer(cfg, network),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor),
        discriminator=discriminator,
        disc_optimizer=disc_optimizer,
        prior=body.prior if body is not None else None,
        objective=Objective(cfg, projection, clothes_aware),
        train_batches=iter(train_batches(cfg, rank, world_size)),
        evaluator=Evaluator(cfg, index, device, rank, world_size, run_id, projection),
    )
