"""The per-worker training loop, run by Ray Train on every worker.

It reads top to bottom: context (rank, world size, device, precision) → data for this rank → body model,
network and discriminator → one DeepSpeed engine each → resume from the latest checkpoint → epochs of
alternating encoder (G) and discriminator (D) steps → evaluation → checkpoint + `ray.train.report`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch

from reid3dsl.config import Config, from_redacted
from reid3dsl.log import progress, setup_logging
from reid3dsl.precision import Precision, resolve_precision
from reid3dsl.profiling import section
from reid3dsl.train.checkpoint import TrainState, restore, save_and_report
from reid3dsl.train.components import Components, build_components
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
        if dist.get_backend() == "nccl":  # NCCL (GPU runs) reduces CUDA tensors only
            bad = bad.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(bad)
    return bad.item() == 0


def _first_bad(values: dict[str, torch.Tensor]) -> str | None:
    """The name of the first non-finite value, on the lowest rank that has one (None: all finite everywhere).
    Ranks may hold different names (a term no row of their batch had), so names, not positions, are compared."""
    import torch.distributed as dist

    if _all_finite(list(values.values())):
        return None
    mine = next((n for n, v in values.items() if not torch.isfinite(v.detach()).all()), None)
    if not (dist.is_available() and dist.is_initialized()):
        return mine
    seen: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, mine)
    return next(n for n in seen if n is not None)


@contextlib.contextmanager
def _gradient_checks(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect, for every gradient autograd computes for `module`'s trainable parameters while inside, whether it is
    finite. The hooks see each rank's own gradients before DeepSpeed reduces them, so the check works alike for
    every ZeRO stage and precision (a non-finite local gradient makes the reduced one non-finite too)."""
    flags: list[torch.Tensor] = []

    def check(grad: torch.Tensor) -> None:
        flags.append(torch.isfinite(grad).all())

    handles = [p.register_hook(check) for p in module.parameters() if p.requires_grad]
    try:
        yield flags
    finally:
        for h in handles:
            h.remove()


def _nan_unless_all(flags: list[torch.Tensor]) -> torch.Tensor:
    """0.0 when every boolean flag is true, else NaN: a check that `_first_bad` tests like a loss."""
    return torch.tensor(0.0 if all(bool(f) for f in flags) else float("nan"))


def _discard_gradients(engine: Any) -> None:
    """Drop the gradients of the last backward without an update. DeepSpeed's ZeRO (and fp16) optimizers do this in
    `step()` themselves when the global gradient norm is not finite (their overflow path: no update, buffers
    cleared, LR schedule not advanced); a plain torch optimizer (ZeRO stage 0) has no such path: zero the grads."""
    if hasattr(engine.optimizer, "overflow"):
        engine.step()
        if engine.was_step_applied():
            raise RuntimeError("DeepSpeed applied an update with non-finite gradients")
    else:
        engine.zero_grad()


def _skip(cfg: Config, state: TrainState, bad: str, precision: Precision) -> None:
    """Count a skipped step; abort after train.max_bad_steps in a row. fp16 gradient overflows are the loss
    scaler's business (it lowers the scale; DeepSpeed stops at its minimum), so they do not count as a streak."""
    state.skipped_steps += 1
    if precision.name == "fp16" and bad.startswith("grad/"):
        log.info("step %d: fp16 gradient overflow; update skipped, loss scale lowered", state.step)
        return
    if state.bad_in_a_row == 0:
        state.first_bad = bad
    state.bad_in_a_row += 1
    log.warning("step %d: non-finite %s; update skipped on every rank and every engine", state.step, bad)
    if state.bad_in_a_row >= cfg.train.max_bad_steps:
        raise FloatingPointError(f"{state.bad_in_a_row} non-finite steps in a row (first bad: {state.first_bad}, "
                                 f"at step {state.step - state.bad_in_a_row + 1}); aborting")


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Per-name mean over the ranks that have the name (ranks may differ, e.g. a term no row of a batch had)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, values)
    names = sorted({n for g in gathered for n in g})
    return {n: sum(g[n] for g in gathered if n in g) / sum(n in g for g in gathered) for n in names}


def sum_over_ranks(count: int) -> int:
    """`count` summed over all ranks (e.g. the samples each rank's readers skipped)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return count
    counts: list[int] = [0] * dist.get_world_size()
    dist.all_gather_object(counts, count)
    return sum(counts)


def train_step(cfg: Config, parts: Components, engine: Any, disc_engine: Any | None, batch: dict[str, Any],
               precision: Precision, state: TrainState, prior_generator: torch.Generator) -> dict[str, float] | None:
    """One encoder (G) step and, with the adversarial prior, one discriminator (D) step → the loss terms.

    A non-finite number skips the whole step, both engines, on every rank alike (None; counted in `state`): a loss
    term or D's loss (checked before any backward), D's gradients (checked on a side computation of D's loss,
    before any backward: D is small) or G's gradients (checked as autograd makes them, before `engine.step`; D then
    never runs backward). `train.max_bad_steps` such steps in a row abort, naming what went bad first."""
    model = engine.module
    has_3d = model.switches.has_3d
    with precision.autocast():
        out = engine(batch["image"], batch["shape_image"] if has_3d else None)
        terms = parts.objective.generator_terms(out, batch, model, disc_engine.module if disc_engine else None,
                                                assp_warmup=state.epoch < cfg.train.assp_epochs)
    total = parts.objective.total(terms)
    checks = {**{f"loss/{n}": v for n, v in terms.items()}, "loss/total": total}
    adversarial = disc_engine is not None and has_3d
    if adversarial:
        shape = out["shape"]
        sampled = parts.prior.sample(shape["rotmats"].shape[0], prior_generator)
        real = tuple(t.to(shape["rotmats"].device) for t in sampled)
        fake = (shape["rotmats"], shape["betas"])
        disc = disc_engine.module
        with section("discriminator"):
            with precision.autocast():
                side_loss = parts.objective.discriminator_loss(disc, real, fake)
            params = [p for p in disc.parameters() if p.requires_grad]
            grads = torch.autograd.grad(side_loss, params, allow_unused=True) if side_loss.requires_grad else ()
        checks["loss/discriminator"] = side_loss
        checks["grad/discriminator"] = _nan_unless_all([torch.isfinite(g).all() for g in grads if g is not None])
    bad = _first_bad(checks)
    if bad is None:
        with _gradient_checks(model) as finite:
            engine.backward(total)
        if not _all_finite([_nan_unless_all(finite)]):
            bad = "grad/network"
            _discard_gradients(engine)
    if bad is not None:
        _skip(cfg, state, bad, precision)
        return None
    state.bad_in_a_row = 0
    with section("optimizer"):
        engine.step()
    metrics = {f"loss/{n}": float(v.detach()) for n, v in terms.items()}
    metrics["loss/total"] = float(total.detach())
    if adversarial:
        with section("discriminator"):
            with precision.autocast():
                d_loss = parts.objective.discriminator_loss(disc_engine, real, fake)
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

    cfg = from_redacted(loop_config["config"])
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
    state = restore(cfg, engine, disc_engine)
    buffer = MetricBuffer(cfg, loop_config["run_id"]) if rank == 0 else None
    epoch_terms: dict[str, list[float]] = defaultdict(list)
    skipped_samples = 0
    prior_generator = torch.Generator().manual_seed(cfg.train.seed * 1000 + rank)
    epoch_ran = False
    for epoch in range(state.epoch, cfg.train.epochs):
        epoch_ran = True
        engine.train()
        t0 = time.perf_counter()
        for _ in progress(range(cfg.train.steps_per_epoch), f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step"):
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
        skipped_total = sum_over_ranks(skipped_samples)
        epoch_terms.clear()
        report = {
            "epoch": state.epoch, "step": state.step, **summary,
            "throughput/img_per_s": cfg.train.batch_size * cfg.train.steps_per_epoch / elapsed,
            "data/skipped": skipped_total, "train/skipped_steps": state.skipped_steps,
        }
        last = state.epoch == cfg.train.epochs
        if last or state.epoch % cfg.eval.every == 0:
            report.update(parts.evaluate(engine.module, precision, state.epoch, last))
        if buffer is not None:
            # Per-step losses are already in the buffer; the epoch adds throughput, counters and evaluation.
            buffer.add({k: v for k, v in report.items() if k not in ("epoch", "step") and not k.startswith("loss/")},
                       state.step)
        checkpoint = last or state.epoch % cfg.train.checkpoint_every == 0
        save_and_report(cfg, engine, disc_engine, state, report, checkpoint=checkpoint)
        if buffer is not None and checkpoint:
            buffer.flush()
        log.info("epoch %d/%d: %s", state.epoch, cfg.train.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in report.items() if isinstance(v, float) and "/" in k)[:400])
    if state.epoch >= cfg.train.epochs and not epoch_ran:
        # Resumed a finished run: evaluate its final weights again so the job still reports its results.
        final = parts.evaluate(engine.module, precision, state.epoch, True)
        report = {"epoch": state.epoch, "step": state.step, **final}
        save_and_report(cfg, engine, disc_engine, state, report, checkpoint=False)
    if rank == 0:
        parts.finish(engine.module, precision)
