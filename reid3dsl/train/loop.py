"""The per-worker training loop, run by Ray Train on every worker.

It reads top to bottom: context (rank, world size, device, precision) → data for this rank → body model,
network and discriminator → one DeepSpeed engine each → resume from the latest checkpoint → epochs of
alternating encoder (G) and discriminator (D) steps → evaluation → checkpoint + `ray.train.report`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import torch

from reid3dsl.config import Config
from reid3dsl.log import setup_logging
from reid3dsl.train.checkpoint import TrainState, restore, save_and_report
from reid3dsl.train.components import Components, build_components
from reid3dsl.train.precision import Precision, resolve_precision
from reid3dsl.train.tracking import MetricBuffer

log = logging.getLogger(__name__)


def deepspeed_config(cfg: Config, precision: Precision, micro_batch: int) -> dict[str, Any]:
    """The DeepSpeed config of an engine: batch, clipping, ZeRO stage and the precision policy's sections.

    The optimizer is a client torch optimizer (no "optimizer" section: on CPU that would build FusedAdam)."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.train.grad_clip,
        "zero_optimization": {"stage": cfg.train.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        **precision.deepspeed_sections(),
    }


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _all_finite(values: list[torch.Tensor]) -> bool:
    """True when every value is finite on every rank (one all-reduce, so all ranks decide alike)."""
    import torch.distributed as dist

    bad = torch.tensor([float(not torch.isfinite(v.detach()).all()) for v in values] or [0.0]).sum().reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad)
    return bad.item() == 0


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Per-name mean over the ranks that have the name (ranks may differ, e.g. a term no row of a batch had)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, values)
    names = sorted({n for g in gathered for n in g})
    return {n: sum(g[n] for g in gathered if n in g) / sum(n in g for g in gathered) for n in names}


def train_step(cfg: Config, parts: Components, engine: Any, disc_engine: Any | None, batch: dict[str, Any],
               precision: Precision, state: TrainState, prior_generator: torch.Generator) -> dict[str, float] | None:
    """One encoder (G) step and, with the adversarial prior, one discriminator (D) step → the loss terms.

    A non-finite loss on any rank skips the step on every rank (None; counted in `state`); `train.max_bad_steps`
    of them in a row abort with the name of the loss term that went bad first."""
    with precision.autocast():
        out = engine(batch["image"], batch["shape_image"] if "shape" in parts.streams else None)
        terms = parts.objective.generator_terms(out, batch, disc_engine.module if disc_engine else None)
    total = parts.objective.total(terms)
    if not _all_finite([total]):
        bad = next((n for n, v in terms.items() if not torch.isfinite(v).all()), "total")
        state.skipped_steps += 1
        state.bad_in_a_row += 1
        log.warning("step %d: non-finite loss (first bad term: loss/%s); step skipped on every rank", state.step, bad)
        if state.bad_in_a_row >= cfg.train.max_bad_steps:
            raise FloatingPointError(
                f"{state.bad_in_a_row} non-finite steps in a row (first bad term: loss/{bad}); aborting"
            )
        return None
    state.bad_in_a_row = 0
    engine.backward(total)
    engine.step()
    metrics = {f"loss/{n}": float(v.detach()) for n, v in terms.items()}
    metrics["loss/total"] = float(total.detach())
    if disc_engine is not None and "shape" in out:
        shape = out["shape"]
        sampled = parts.prior.sample(shape["rotmats"].shape[0], prior_generator)
        real = tuple(t.to(shape["rotmats"].device) for t in sampled)
        with precision.autocast():
            d_loss = parts.objective.discriminator_loss(disc_engine, real, (shape["rotmats"], shape["betas"]))
        disc_engine.backward(d_loss)
        disc_engine.step()
        metrics["loss/discriminator"] = float(d_loss.detach())
    return metrics


def init_engines(cfg: Config, parts: Components, precision: Precision, world_size: int) -> tuple[Any, Any | None]:
    """One DeepSpeed engine for the two-stream network and one for the discriminator (None without it)."""
    import deepspeed

    micro = cfg.train.batch_size // world_size
    engine, *_ = deepspeed.initialize(
        model=parts.network, optimizer=parts.optimizer, lr_scheduler=parts.scheduler,
        config=deepspeed_config(cfg, precision, micro),
    )
    disc_engine = None
    if parts.discriminator is not None:
        disc_engine, *_ = deepspeed.initialize(
            model=parts.discriminator, optimizer=parts.disc_optimizer, config=deepspeed_config(cfg, precision, micro),
        )
    return engine, disc_engine


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    cfg = Config.model_validate(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    setup_logging(rank)
    device = ray.train.torch.get_device()
    precision = resolve_precision(cfg.train.precision, device)
    torch.manual_seed(cfg.train.seed + rank)
    # The node's address tells, in a multi-node run, where each rank landed.
    log.info("worker %d/%d on node %s (%s), precision %s", rank, world, ray.util.get_node_ip_address(), device,
             precision.name)

    parts = build_components(cfg, device, rank, world, loop_config["run_id"])
    engine, disc_engine = init_engines(cfg, parts, precision, world)
    state = restore(engine, disc_engine)
    buffer = MetricBuffer(cfg, loop_config["run_id"]) if rank == 0 else None
    epoch_terms: dict[str, list[float]] = defaultdict(list)
    skipped_samples = 0
    prior_generator = torch.Generator().manual_seed(cfg.train.seed * 1000 + rank)
    epoch_ran = False
    for epoch in range(state.epoch, cfg.train.epochs):
        epoch_ran = True
        engine.train()
        t0 = time.perf_counter()
        for _ in range(cfg.train.steps_per_epoch):
            batch = _to_device(next(parts.train_batches), device)
            skipped_samples += int(batch["skipped"])
            state.step += 1
            metrics = train_step(cfg, parts, engine, disc_engine, batch, precision, state, prior_generator)
            if metrics is None:
                continue
            for n, v in metrics.items():
                epoch_terms[n].append(v)
            if buffer is not None:
                buffer.add({**metrics, "lr": engine.get_lr()[0]}, state.step)
        elapsed = time.perf_counter() - t0
        state.epoch = epoch + 1
        summary = _mean_over_ranks({n: sum(v) / len(v) for n, v in epoch_terms.items()})
        skipped_total = round(_mean_over_ranks({"s": float(skipped_samples)})["s"] * world)
        epoch_terms.clear()
        report = {
            "epoch": state.epoch, "step": state.step, **summary,
            "throughput/img_per_s": cfg.train.batch_size * cfg.train.steps_per_epoch / elapsed,
            "data/skipped": skipped_total, "train/skipped_steps": state.skipped_steps,
        }
        last = state.epoch == cfg.train.epochs
        if last or state.epoch % cfg.eval.every == 0:
            report.update(parts.evaluate(engine.module, precision, last))
        if buffer is not None:
            # Per-step losses are already in the buffer; the epoch adds throughput, counters and evaluation.
            buffer.add({k: v for k, v in report.items() if k not in ("epoch", "step") and not k.startswith("loss/")},
                       state.step)
        checkpoint = last or state.epoch % cfg.train.checkpoint_every == 0
        save_and_report(engine, disc_engine, state, report, checkpoint=checkpoint)
        if buffer is not None and checkpoint:
            buffer.flush()
        log.info("epoch %d/%d: %s", state.epoch, cfg.train.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in report.items() if isinstance(v, float) and "/" in k)[:400])
    if state.epoch >= cfg.train.epochs and not epoch_ran:
        # Resumed a finished run: evaluate its final weights again so the job still reports its results.
        report = {"epoch": state.epoch, "step": state.step, **parts.evaluate(engine.module, precision, True)}
        save_and_report(engine, disc_engine, state, report, checkpoint=False)
    if rank == 0:
        parts.finish(engine.module, precision)
