"""Training-step benchmark: the full 3DSL step against the RGB-only baseline, and where a 3DSL step's time goes.

Both models are built from the same config (`--config`, default the demo's) by `build_components` and
wrapped by `init_engines` in one process under a one-rank gloo group, at the per-worker batch of the config
(`train.batch_size / cluster.num_workers`), its input sizes and its precision policy (`train.precision`;
`auto` is bf16 on CPUs with native bf16, fp32 otherwise). They train on the same few batches drawn from the
pipeline beforehand (so loading is not timed), through the job's own `train_step`: one step of each per
round, after warm-up rounds; the median step time of each is reported and their ratio.

The split of a 3DSL step comes from `torch.profiler` over a few more steps of the same engines. Labels are put
around the real code paths — the two backbone trunks, the rest of the network (heads, regressor, shape
encoder), the objective's loss terms, its SMPL+D projection, the renderer, the discriminator (its forward
passes, backward and step) and the network engine's optimizer step — and every backward op is charged to the
label of the forward op that created it (autograd's sequence numbers). What no label covers (gradient
accumulation and finiteness checks, DeepSpeed's bookkeeping, copies) is "other". Shares are of the profiled
time. Prints a table and merges it into bench/results.json under "train_step".

    python -m bench.train_step [--config configs/demo.yaml] [--set section.key=value ...] [--quick]
                               [--repeats 10] [--profile-steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import logging
import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.common import RESULTS, figure, load_avg, machine, median, merge_results, rounds, table
from reid3dsl.config import Config, add_config_args, config_from_args
from reid3dsl.errors import UserError, cli_main
from reid3dsl.log import setup_logging

log = logging.getLogger("bench.train_step")
CPU = torch.device("cpu")
BATCHES = 4  # distinct batches the steps cycle through
# Parts of a 3DSL step, in the order they are printed.
PARTS = ("backbones", "heads", "losses", "smpl", "renderer", "discriminator", "optimizer", "other")
PART_NAMES = {
    "backbones": "backbones (RGB + E_3D trunks)", "heads": "heads (BNNecks, E_pose, E_shape/MGS)",
    "losses": "loss terms (CE, triplet, keypoint, ...)", "smpl": "SMPL+D and camera projection",
    "renderer": "silhouette renderer", "discriminator": "discriminator (fwd, bwd, step)",
    "optimizer": "optimizer step (network engine)", "other": "other (grad checks/accumulation, DeepSpeed, copies)",
}


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """A one-process gloo group, as DeepSpeed expects one (the job gets its group from Ray Train)."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class Trainer:
    """One model variant's components, engines and step, on batches given to it."""

    def __init__(self, cfg: Config) -> None:
        from reid3dsl.train.checkpoint import TrainState
        from reid3dsl.train.components import build_components
        from reid3dsl.train.loop import init_engines
        from reid3dsl.train.precision import resolve_precision

        self.cfg = cfg
        self.parts = build_components(cfg, CPU, 0, 1, None)
        self.precision = resolve_precision(cfg.train.precision, CPU)
        self.engine, self.disc_engine = init_engines(cfg, self.parts, self.precision, 1)
        self.state = TrainState()
        self.generator = torch.Generator().manual_seed(0)
        self.skipped = 0

    def step(self, batch: dict[str, Any]) -> None:
        from reid3dsl.train.loop import train_step

        metrics = train_step(self.cfg, self.parts, self.engine, self.disc_engine, batch, self.precision, self.state,
                             self.generator)
        self.skipped += metrics is None


def seconds(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _labelled(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)

    return wrapper


def _label_module(module: nn.Module, label: str) -> None:
    """Open a profiler range named `label` around every forward of `module` (hooks: the module is not changed)."""
    open_ranges: list[Any] = []

    def enter(*_: Any) -> None:
        rf = torch.profiler.record_function(label)
        rf.__enter__()
        open_ranges.append(rf)

    def leave(*_: Any) -> None:
        open_ranges.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def label_parts(trainer: Trainer) -> None:
    """Put the profiler labels of `PARTS` around the real code paths of `trainer`'s 3DSL step."""
    parts, net = trainer.parts, trainer.parts.network
    _label_module(net, "heads")  # innermost label wins: the trunks inside are "backbones"
    for trunk in (net.rgb.trunk if net.rgb is not None else None, net.shape.trunk if net.shape is not None else None):
        if trunk is not None:
            _label_module(trunk, "backbones")
    objective = parts.objective
    objective.generator_terms = _labelled(objective.generator_terms, "losses")  # type: ignore[method-assign]
    objective.project = _labelled(objective.project, "smpl")  # type: ignore[method-assign]
    if objective.projection is not None and objective.projection.renderer is not None:
        renderer = objective.projection.renderer
        renderer.render = _labelled(renderer.render, "renderer")
    if trainer.disc_engine is not None:
        _label_module(trainer.disc_engine.module, "discriminator")
        trainer.disc_engine.step = _labelled(trainer.disc_engine.step, "discriminator")
    trainer.engine.step = _labelled(trainer.engine.step, "optimizer")


BACKWARD = "autograd::engine::evaluate_function"


def _owner(event: Any, forward_label: dict[int, str]) -> str:
    """The part an event's own time belongs to: its innermost label, or for work inside a backward node the label
    of the forward op that made the node; "other" when neither."""
    node = event
    while node is not None:
        if node.name in PARTS:
            return node.name
        if node.name.startswith(BACKWARD):
            return forward_label.get(node.sequence_nr, "other")
        node = node.cpu_parent
    return "other"


def attribute(events: list[Any]) -> dict[str, float]:
    """Profiler events → microseconds per part: every event's self time, charged by `_owner` (so nothing is counted
    twice, whatever ranges DeepSpeed or autograd nest around the ops)."""
    forward_label: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and e.sequence_nr not in forward_label and not e.name.startswith(BACKWARD):
            forward_label[e.sequence_nr] = _owner(e, {})
    spent: dict[str, float] = defaultdict(float)
    for e in events:
        spent[_owner(e, forward_label)] += e.self_cpu_time_total
    return dict(spent)


def profile_split(trainer: Trainer, batches: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Shares of a 3DSL step's time per part over `steps` profiled steps (labels put on `trainer` for good)."""
    from torch.profiler import ProfilerActivity, profile

    label_parts(trainer)
    trainer.step(batches[0])  # the wrappers' first call outside the profile
    wall = 0.0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in itertools.islice(itertools.cycle(batches), steps):
            wall += seconds(lambda b=batch: trainer.step(b))
    spent = attribute(list(prof.events()))
    total_us = wall * 1e6
    # What no top-level event covers (Python between ops) is "other" too.
    spent["other"] = spent.get("other", 0.0) + max(0.0, total_us - sum(spent.values()))
    return {"profiled_steps": steps, "profiled_step_ms": wall / steps * 1e3,
            "share": {p: spent.get(p, 0.0) / sum(spent.values()) for p in PARTS}}


def _variant(cfg: Config, streams: str) -> Config:
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"streams": streams})})


def measure(cfg: Config, repeats: int, warmup: int, profile_steps: int) -> tuple[dict[str, Any], list]:
    """Time both variants round by round, then profile the 3DSL step → (details, figures)."""
    per_worker = cfg.train.batch_size // cfg.cluster.num_workers
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": per_worker})})
    if cfg.model.streams != "both":
        raise UserError(f"model.streams = {cfg.model.streams}: the 3DSL step needs both streams (expected both)")
    with process_group():
        full = Trainer(cfg)
        rgb = Trainer(_variant(cfg, "rgb"))
        batches = list(itertools.islice(full.parts.train_batches, BATCHES))
        full.parts.train_batches.close()  # stops the loader worker: nothing else runs while steps are timed
        cycles = {"3dsl": itertools.cycle(batches), "rgb": itertools.cycle(batches)}  # the same batches in turn
        load_before = load_avg()
        runs = rounds({"3dsl": lambda: seconds(lambda: full.step(next(cycles["3dsl"]))),
                       "rgb": lambda: seconds(lambda: rgb.step(next(cycles["rgb"])))}, repeats, warmup)
        load_after = load_avg()
        split = profile_split(full, batches, profile_steps) if profile_steps else None
    step_ms = {name: median(values) * 1e3 for name, values in runs.items()}
    precision = full.precision.name
    image = f"{cfg.data.height}x{cfg.data.width}"
    figures = [figure("train_step", f"3DSL step (batch {per_worker}, {image}, {precision})", step_ms["3dsl"],
                      "RGB-only step", step_ms["rgb"], "ms", ("<=", 2.5))]
    details = {
        "batch_size": per_worker, "image": image, "shape_image": f"{cfg.data.shape_height}x{cfg.data.shape_width}",
        "silhouette": f"{cfg.data.sil_height}x{cfg.data.sil_width}",
        "silhouette_fraction": cfg.loss.silhouette_fraction, "precision": precision,
        "backbones": [cfg.model.backbone, cfg.model.shape_backbone], "torch_threads": torch.get_num_threads(),
        "repeats": repeats, "warmup": warmup, "load_avg_before": load_before, "load_avg_after": load_after,
        "step_ms": step_ms, "runs_s": runs, "skipped_steps": {"3dsl": full.skipped, "rgb": rgb.skipped},
        "split": split,
    }
    return details, figures


def split_table(details: dict[str, Any]) -> str:
    split = details["split"]
    step = details["step_ms"]["3dsl"]
    lines = [f"where a 3DSL step's time goes ({split['profiled_steps']} profiled steps; shares of the profiled time, "
             f"ms = share x the {step:.0f} ms median step)"]
    for part in PARTS:
        share = split["share"][part]
        lines.append(f"  {PART_NAMES[part]:<55} {100 * share:5.1f}%  {share * step:7.1f} ms")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n\n")[0])
    add_config_args(parser, default="configs/demo.yaml")
    parser.add_argument("--quick", action="store_true", help="2 timed rounds after 1 warm-up, 1 profiled step")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (one step of each model per round)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds run before timing")
    parser.add_argument("--profile-steps", type=int, default=3, help="profiled 3DSL steps for the split (0: none)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to merge the results into")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.profile_steps < 0:
        raise UserError("--repeats: expected >= 1; --warmup and --profile-steps: expected >= 0")
    setup_logging(None)
    from reid3dsl.train.driver import prepare

    info = machine()
    cfg = prepare(config_from_args(args))
    repeats, warmup, profiled = (2, 1, 1) if args.quick else (args.repeats, args.warmup, args.profile_steps)
    details, figures = measure(cfg, repeats, warmup, profiled)
    print(f"training step, one process, {details['torch_threads']} torch threads, median of {repeats} rounds — "
          f"{info['cpu']}, {info['logical_cpus']} CPUs, load {details['load_avg_before']:.1f} → "
          f"{details['load_avg_after']:.1f}")
    print(table(figures))
    if details["split"] is not None:
        print(split_table(details))
    merge_results(args.out, "train_step", details, info, figures)
    print(f"results: {args.out} (key 'train_step')", file=sys.stderr)


if __name__ == "__main__":
    main()
