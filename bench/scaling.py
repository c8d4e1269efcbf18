"""Scaling benchmark: training samples/s of the main job with 2 Ray workers against 1 worker.

The job itself (`reid3dsl.train.driver.run_job`) runs twice from the same config (`--config`, default the
demo's), once per worker count, at the config's per-worker batch (`train.batch_size / cluster.num_workers`) and
per-worker resources (`cluster.cpus_per_worker`) — weak scaling, as adding nodes does. Each run trains two
epochs; the figure is the job's own `throughput/img_per_s` of the second epoch (global samples per second of
training steps, data loading included; start-up, the first epoch's warm-up, evaluation and checkpoints are not
in it). Scaling efficiency = samples/s(2) / (2 x samples/s(1)). MLflow runs and checkpoints go to a scratch
folder. Prints a table and merges it into bench/results.json under "scaling".

    python -m bench.scaling [--config configs/demo.yaml] [--set section.key=value ...] [--quick] [--steps 10]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import RESULTS, figure, load_avg, machine, merge_results, table
from reid3dsl.config import Config, add_config_args, config_from_args
from reid3dsl.errors import UserError, cli_main
from reid3dsl.log import setup_logging

log = logging.getLogger(__name__)
WORKERS = (1, 2)
EPOCHS = 2


def run_config(cfg: Config, workers: int, steps: int, work: Path) -> Config:
    """`cfg` for a run with `workers` workers at `cfg`'s per-worker batch, `steps` steps per epoch, two epochs,
    one checkpoint at the end, MLflow and checkpoints under `work`."""
    per_worker = cfg.train.batch_size // cfg.cluster.num_workers
    update = {
        "train": cfg.train.model_copy(update={"batch_size": per_worker * workers, "epochs": EPOCHS,
                                              "steps_per_epoch": steps, "checkpoint_every": EPOCHS}),
        "cluster": cfg.cluster.model_copy(update={"num_workers": workers, "storage_path": str(work / "runs"),
                                                  "name": f"bench-scaling-{workers}w", "max_failures": 0}),
        "tracking": cfg.tracking.model_copy(update={"uri": f"sqlite:///{work / 'mlflow.db'}",
                                                    "experiment": "bench-scaling", "run_name": f"{workers} workers"}),
    }
    return Config.model_validate({**cfg.to_dict(redact=False), **{k: v.model_dump() for k, v in update.items()}})


def measure(cfg: Config, steps: int, work: Path) -> tuple[dict[str, Any], list]:
    """One job per worker count → (details, figures)."""
    import torch

    from reid3dsl.precision import resolve_precision
    from reid3dsl.train.driver import run_job

    if cfg.cluster.local_cpus is not None and cfg.cluster.local_cpus < max(WORKERS) * cfg.cluster.cpus_per_worker:
        raise UserError(f"cluster.local_cpus = {cfg.cluster.local_cpus}: expected at least {max(WORKERS)} workers x "
                        f"cluster.cpus_per_worker = {cfg.cluster.cpus_per_worker}")
    runs: dict[int, dict[str, Any]] = {}
    for workers in WORKERS:
        before = load_avg()
        # The job prints its summary; this benchmark's stdout is its table.
        with contextlib.redirect_stdout(sys.stderr):
            metrics = run_job(run_config(cfg, workers, steps, work))
        runs[workers] = {"samples_per_s": metrics["throughput/img_per_s"], "steps": metrics["step"],
                         "epochs": metrics["epoch"], "skipped_samples": metrics.get("data/skipped"),
                         "skipped_steps": metrics.get("train/skipped_steps"), "load_avg_before": before,
                         "load_avg_after": load_avg()}
        log.info("%d worker(s): %.1f samples/s", workers, metrics["throughput/img_per_s"])
    per_worker = cfg.train.batch_size // cfg.cluster.num_workers
    one, two = runs[1]["samples_per_s"], runs[2]["samples_per_s"]
    figures = [figure("scaling", f"2 Ray workers (batch {per_worker} each, {cfg.cluster.cpus_per_worker:g} CPU each)",
                      two, "1 Ray worker", one, "samples/s", (">=", 1.6),
                      note=f"scaling efficiency {two / (2 * one):.0%}")]
    details = {"per_worker_batch": per_worker, "cpus_per_worker": cfg.cluster.cpus_per_worker,
               "steps_per_epoch": steps, "epochs": EPOCHS,
               "precision": resolve_precision(cfg.train.precision, torch.device("cpu")).name,
               "runs": {str(k): v for k, v in runs.items()}, "efficiency": two / (2 * one)}
    return details, figures


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    add_config_args(parser, default="configs/demo.yaml")
    parser.add_argument("--quick", action="store_true", help="2 steps per epoch")
    parser.add_argument("--steps", type=int, default=10, help="training steps per epoch (the second one is timed)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to merge the results into")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise UserError("--steps: expected an integer >= 1")
    setup_logging(None)
    info = machine()
    cfg = config_from_args(args)
    with tempfile.TemporaryDirectory(prefix="reid3dsl-bench-scaling-") as work:
        details, figures = measure(cfg, 2 if args.quick else args.steps, Path(work))
    print(f"scaling, the main job with 1 and 2 Ray workers, samples/s of epoch {EPOCHS} — {info['cpu']}, "
          f"{info['logical_cpus']} CPUs, load {details['runs']['1']['load_avg_before']:.1f} → "
          f"{details['runs']['2']['load_avg_after']:.1f}")
    print(table(figures))
    print(f"  {figures[0].note}")
    merge_results(args.out, "scaling", details, info, figures)
    print(f"results: {args.out} (key 'scaling')", file=sys.stderr)


if __name__ == "__main__":
    main()
