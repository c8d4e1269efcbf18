"""Everything a worker trains with, built from the config in one place: data stream, model (through
`ThreeDSL.from_config`), pose prior, discriminator, optimizers, schedule, objective and evaluator."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reid3dsl.config import Config
from reid3dsl.models.threedsl import ThreeDSL
from reid3dsl.precision import Precision
from reid3dsl.train.objective import Objective
from reid3dsl.train.schedule import lr_factor

log = logging.getLogger(__name__)


def make_optimizer(cfg: Config, model: ThreeDSL) -> torch.optim.Optimizer:
    """One client optimizer (DeepSpeed takes one per engine) over the model's parameter groups."""
    t = cfg.train
    groups = model.param_groups(t)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.Adam(groups, lr=t.lr)


@dataclass
class Components:
    """What one worker trains with."""

    network: ThreeDSL
    optimizer: torch.optim.Optimizer
    scheduler: Callable[[torch.optim.Optimizer], Any]
    discriminator: nn.Module | None
    disc_optimizer: torch.optim.Optimizer | None
    prior: Any
    objective: Objective
    train_batches: Iterator[dict[str, Any]]
    evaluator: Any

    def evaluate(self, module: ThreeDSL, precision: Precision, epoch: int, final: bool) -> dict[str, float]:
        return self.evaluator.evaluate(module, precision, epoch, final)

    def finish(self, module: ThreeDSL, precision: Precision) -> None:
        self.evaluator.finish(module, precision)


def build_components(cfg: Config, device: torch.device, rank: int, world_size: int, run_id: str | None) -> Components:
    from reid3dsl.data.index import load_index
    from reid3dsl.data.pipeline import train_batches
    from reid3dsl.train.evaluator import Evaluator

    index = load_index(cfg.data.root, cfg.storage)
    prior = mean_pose = None
    if cfg.model.streams != "rgb":
        from reid3dsl.body.prior import load_prior
        from reid3dsl.models.threedsl import prior_mean_pose

        prior = load_prior(cfg.body)
        mean_pose = prior_mean_pose(prior)
    network = ThreeDSL.from_config(cfg, index.num_classes, mean_pose=mean_pose)
    switches = network.switches
    if switches.has_3d and cfg.model.shape_init:
        from reid3dsl.models.io import init_estimator

        init_estimator(network, cfg.model.shape_init)
        log.info("3D stream initialised from %s", cfg.model.shape_init)
    network = network.to(device)
    has_clothes = bool(index.split("train").clothes)
    clothes_aware = {"on": True, "off": False, "auto": has_clothes}[cfg.loss.clothes_aware]
    discriminator = disc_optimizer = None
    if switches.adversarial:
        from reid3dsl.models.discriminator import SMPLDiscriminator

        discriminator = SMPLDiscriminator(num_betas=cfg.body.num_betas).to(device)
        disc_optimizer = torch.optim.Adam(discriminator.parameters(), lr=cfg.train.lr_d, betas=(0.5, 0.999))
    factor = lr_factor(cfg.train)
    log.info("network: %.1fM parameters, %d training identities, streams %s, clothes-aware triplet %s",
             sum(p.numel() for p in network.parameters()) / 1e6, index.num_classes, sorted(switches.streams),
             clothes_aware)
    return Components(
        network=network,
        optimizer=make_optimizer(cfg, network),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor),
        discriminator=discriminator,
        disc_optimizer=disc_optimizer,
        prior=prior if switches.adversarial else None,
        objective=Objective(cfg, switches, clothes_aware),
        train_batches=iter(train_batches(cfg, rank, world_size)),
        evaluator=Evaluator(cfg, index, device, rank, world_size, run_id),
    )
