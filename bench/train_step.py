"""Training-step benchmark: the full 3DSL step against the RGB-only baseline, and where a 3DSL step's time goes.

Both models are built from the same config (`--config`, default the demo's) by `build_components` and
wrapped by `init_engines` in one process under a one-rank gloo group, at the config's per-worker batch
(`train.batch_size / cluster.num_workers`), per-worker threads (`cluster.cpus_per_worker`: Ray sets a worker's
OMP_NUM_THREADS so), input sizes and precision policy (`train.precision`; `auto` is bf16 on CPUs with native
bf16, fp32 otherwise). They train on the same few batches drawn from the pipeline beforehand (so loading is
not timed), through the job's own `train_step`: one step of each per round, after warm-up rounds; the median
step time of each is reported and their ratio.

The split of a 3DSL step: the code paths label themselves with `reid3dsl.profiling.section` — the two backbone
trunks, the rest of the network (heads, regressor, shape encoder), the objective's loss terms, its SMPL+D
projection, the renderer, the discriminator (forward passes and step) and the network engine's optimizer step;
a `Clock` observes those sections' wall time. `torch.profiler`
over a few more steps charges every op to its range, and every backward op to the range of the forward op that
made it (autograd's sequence numbers); each part is then corrected for the profiler's own cost, and what no
range covers (gradient accumulation and finiteness checks, DeepSpeed's bookkeeping, copies) is "other"
(`profile_split`). Prints a table and merges it into bench/results.json under "train_step".

    python -m bench.train_step [--config configs/demo.yaml] [--set section.key=value ...] [--quick]
                               [--repeats 10] [--profile-steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import math
import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS, figure, load_avg, machine, median, merge_results, rounds, table
from reid3dsl.config import Config, add_config_args, config_from_args
from reid3dsl.errors import UserError, cli_main
from reid3dsl.log import setup_logging
from reid3dsl.profiling import SECTIONS, observe

log = logging.getLogger(__name__)
CPU = torch.device("cpu")
BATCHES = 4  # distinct batches the steps cycle through
# Parts of a 3DSL step, in the order they are printed.
PARTS = (*SECTIONS, "other")
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
        from reid3dsl.precision import resolve_precision
        from reid3dsl.train.checkpoint import TrainState
        from reid3dsl.train.components import build_components
        from reid3dsl.train.loop import init_engines

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


class Clock:
    """An observer of `reid3dsl.profiling.section`s: each section's exclusive wall time (time in nested sections
    belongs to those) summed per name until `take()`."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.spent: dict[str, float] = defaultdict(float)
        self._open: list[tuple[str, float]] = []
        self._nested: list[float] = []

    def enter(self, label: str) -> None:
        self._open.append((label, self.now()))
        self._nested.append(0.0)

    def leave(self) -> None:
        label, start = self._open.pop()
        total = self.now() - start
        self.spent[label] += total - self._nested.pop()
        if self._nested:
            self._nested[-1] += total

    def take(self) -> dict[str, float]:
        out = dict(self.spent)
        self.spent.clear()
        return out


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


def owners(events: list[Any]) -> list[tuple[Any, str]]:
    """Every profiler event with the part its own time is charged to (`_owner`)."""
    forward_label: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and e.sequence_nr not in forward_label and not e.name.startswith(BACKWARD):
            forward_label[e.sequence_nr] = _owner(e, {})
    return [(e, _owner(e, forward_label)) for e in events]


def attribute(events: list[Any]) -> dict[str, float]:
    """Profiler events → microseconds per part: every event's self time, charged by `owners` (so nothing is counted
    twice, whatever ranges DeepSpeed or autograd nest around the ops)."""
    spent: dict[str, float] = defaultdict(float)
    for e, owner in owners(events):
        spent[owner] += e.self_cpu_time_total
    return dict(spent)


def _mean(snapshots: list[dict[str, float]]) -> dict[str, float]:
    return {p: sum(s.get(p, 0.0) for s in snapshots) / len(snapshots) for p in PARTS}


def profile_split(trainer: Trainer, clock: Clock, batches: list[dict[str, Any]], steps: int, step_s: float,
                  ranges_s: dict[str, float]) -> dict[str, Any]:
    """Milliseconds of a median 3DSL step (`step_s`) per part, from `steps` profiled steps.

    The profiler charges backward work to the part whose forward made it, but recording an op costs it time, which
    inflates parts made of many small ops (pytorch3d's CPU rasteriser indexes tensors element by element) far more
    than parts made of a few big ones (convolutions). So each part's profiled time is divided by its own inflation:
    the time `clock` measured in its ranges while profiling over `ranges_s`, the same ranges' time in unprofiled
    steps. "other" (gradient checks and accumulation, DeepSpeed's bookkeeping, copies) is what remains of `step_s`."""
    from torch.profiler import ProfilerActivity, profile

    snapshots = []
    wall = 0.0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in itertools.islice(itertools.cycle(batches), steps):
            with observe(clock):
                wall += seconds(lambda b=batch: trainer.step(b))
            snapshots.append(clock.take())
    profiled = {p: us / 1e6 / steps for p, us in attribute(list(prof.events())).items()}
    ranges_profiled = _mean(snapshots)
    inflation = {p: ranges_profiled[p] / ranges_s[p] if ranges_s.get(p) else 1.0 for p in PARTS if p != "other"}
    seconds_per_part = {p: profiled.get(p, 0.0) / inflation[p] for p in inflation}
    seconds_per_part["other"] = max(0.0, step_s - sum(seconds_per_part.values()))
    return {"profiled_steps": steps, "profiled_step_ms": wall / steps * 1e3, "inflation": inflation,
            "profiled_ms": {p: 1e3 * profiled.get(p, 0.0) for p in PARTS},
            "ms": {p: 1e3 * v for p, v in seconds_per_part.items()}}


def _variant(cfg: Config, streams: str) -> Config:
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"streams": streams})})


def measure(cfg: Config, repeats: int, warmup: int, profile_steps: int) -> tuple[dict[str, Any], list]:
    """Time both variants round by round, then profile the 3DSL step → (details, figures)."""
    per_worker = cfg.train.batch_size // cfg.cluster.num_workers
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": per_worker})})
    if cfg.model.streams != "both":
        raise UserError(f"model.streams = {cfg.model.streams}: the 3DSL step needs both streams (expected both)")
    # A Ray worker runs with OMP_NUM_THREADS = its whole CPUs (at least 1): time the step as a worker runs it.
    torch.set_num_threads(max(1, math.floor(cfg.cluster.cpus_per_worker)))
    with process_group():
        full = Trainer(cfg)
        rgb = Trainer(_variant(cfg, "rgb"))
        batches = list(itertools.islice(full.parts.train_batches, BATCHES))
        full.parts.train_batches.close()  # stops the loader worker: nothing else runs while steps are timed
        clock = Clock()
        ranges: list[dict[str, float]] = []  # the clock's per-part times of every 3DSL step

        def full_step() -> float:
            with observe(clock):
                took = seconds(lambda: full.step(next(cycles["3dsl"])))
            ranges.append(clock.take())
            return took

        cycles = {"3dsl": itertools.cycle(batches), "rgb": itertools.cycle(batches)}  # the same batches in turn
        load_before = load_avg()
        runs = rounds({"3dsl": full_step, "rgb": lambda: seconds(lambda: rgb.step(next(cycles["rgb"])))},
                      repeats, warmup)
        load_after = load_avg()
        step_ms = {name: median(values) * 1e3 for name, values in runs.items()}
        split = None
        if profile_steps:
            split = profile_split(full, clock, batches, profile_steps, step_ms["3dsl"] / 1e3, _mean(ranges[warmup:]))
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
    lines = [f"where a 3DSL step's {step:.0f} ms go (profiler over {split['profiled_steps']} steps, each part "
             "corrected for the profiler's cost by its own ranges' unprofiled time)"]
    for part in PARTS:
        ms = split["ms"][part]
        lines.append(f"  {PART_NAMES[part]:<55} {ms:7.1f} ms  {100 * ms / step:5.1f}%")
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
    print(f"training step, one process, {details['torch_threads']} torch thread(s) as a worker has, median of "
          f"{repeats} rounds — {info['cpu']}, {info['logical_cpus']} CPUs, load {details['load_avg_before']:.1f} → "
          f"{details['load_avg_after']:.1f}")
    print(table(figures))
    if details["split"] is not None:
        print(split_table(details))
    merge_results(args.out, "train_step", details, info, figures)
    print(f"results: {args.out} (key 'train_step')", file=sys.stderr)


if __name__ == "__main__":
    main()
