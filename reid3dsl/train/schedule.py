"""Learning-rate schedules: linear warm-up, then step decay or cosine annealing, per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable

from reid3dsl.config import TrainConfig


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """step → multiplier of the base learning rate (for `torch.optim.lr_scheduler.LambdaLR`).

    Warm-up rises linearly from 1% over `warmup_epochs`; then `step` multiplies by `gamma` at each epoch in
    `milestones`, or `cosine` anneals to 1% at the end of `epochs`.
    """
    steps = cfg.steps_per_epoch
    warmup = cfg.warmup_epochs * steps
    total = cfg.epochs * steps

    def factor(step: int) -> float:
        if step < warmup:
            return 0.01 + 0.99 * step / warmup
        if cfg.schedule == "step":
            epoch = step // steps
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
