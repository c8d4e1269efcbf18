"""The driver side of the main job: prepare what every worker needs (stand-in body, synthesized data,
absolute paths), start or join Ray, create the MLflow run, fit the `TorchTrainer`, print the summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reid3dsl.config import Config
from reid3dsl.errors import UserError
from reid3dsl.log import setup_logging
from reid3dsl.train import tracking
from reid3dsl.train.checkpoint import export_key, run_checkpoints, storage

if TYPE_CHECKING:
    from reid3dsl.data.index import DatasetIndex

log = logging.getLogger(__name__)


# The config's local paths (besides data.train_urls and a sqlite tracking URI): `prepare` makes them absolute,
# `pinned_paths` turns the relative ones into overrides for a job that runs in a copy of the project.
PATH_FIELDS = (("data", "root"), ("body", "standin_dir"), ("body", "model_path"), ("body", "prior_path"),
               ("model", "pretrained_path"), ("model", "shape_pretrained_path"), ("model", "shape_init"),
               ("cluster", "storage_path"))


def _is_relative(path: str) -> bool:
    return "://" not in path and not Path(path).expanduser().is_absolute()


def _absolute(path: str | None, base: Path | None = None) -> str | None:
    if path is None or "://" in path:
        return path
    return str(((base or Path.cwd()) / Path(path).expanduser()).resolve())


def pinned_paths(cfg: Config, base: Path) -> list[str]:
    """`section.key=value` overrides that pin `cfg`'s relative local paths (and a relative sqlite tracking URI)
    to folder `base`. For `ray job submit --working-dir` on one machine: the job runs in Ray's copy of the
    working directory, where relative paths would put data, checkpoints and runs that vanish with the copy."""
    import json

    pins = []
    for section, key in PATH_FIELDS:
        value = getattr(getattr(cfg, section), key)
        if value is not None and _is_relative(value):
            pins.append(f"{section}.{key}={_absolute(value, base)}")
    if any(_is_relative(u) for u in cfg.data.train_urls):
        pins.append(f"data.train_urls={json.dumps([_absolute(u, base) for u in cfg.data.train_urls])}")
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, base)
    if uri != cfg.tracking.uri:
        pins.append(f"tracking.uri={uri}")
    return pins


def prepare(cfg: Config) -> Config:
    """A copy of `cfg` with local paths made absolute (workers may run elsewhere), the stand-in body generated
    and the embedded data set synthesized when the config asks for them, and the data set's index checked."""
    from reid3dsl.data.index import load_index
    from reid3dsl.models.threedsl import Switches

    cfg = cfg.model_copy(deep=True)
    for section, key in PATH_FIELDS:
        part = getattr(cfg, section)
        setattr(part, key, _absolute(getattr(part, key)))
    cfg.data.train_urls = [_absolute(u) for u in cfg.data.train_urls]  # type: ignore[misc]
    cfg.tracking.uri = tracking.resolve_tracking_uri(cfg.tracking.uri)
    has_3d = Switches.from_config(cfg).has_3d
    if cfg.body.model_path is None and has_3d:
        from reid3dsl.body.standin import ensure_standin

        ensure_standin(cfg.body.standin_dir, cfg.body.standin_resolution, cfg.body.standin_seed)
    if cfg.data.synthesize:
        from reid3dsl.data.synth import Recipe, synthesize

        synthesize(cfg.data.root, Recipe.from_config(cfg.data), cfg.body)
    check_inputs(cfg, load_index(cfg.data.root, cfg.storage))
    return cfg


def check_inputs(cfg: Config, index: DatasetIndex) -> None:
    """Reject here, in one line and before Ray starts, what every worker would fail on: the body model, the
    pose prior and the 3D stream's initial model (loaded once, as the workers load them) and explicit training
    shards that are missing or not URLs
    (shards listed by index.json are trusted; one that later turns out unreadable is skipped and counted)."""
    from reid3dsl.data.pipeline import training_shards
    from reid3dsl.data.s3 import is_s3, parse_s3_url
    from reid3dsl.models.threedsl import Switches

    if Switches.from_config(cfg).has_3d:
        from reid3dsl.body.prior import load_prior
        from reid3dsl.body.smpld import load_body_model

        load_body_model(cfg.body)
        load_prior(cfg.body)
        if cfg.model.shape_init:
            from reid3dsl.models.io import read_model

            read_model(cfg.model.shape_init)
    if cfg.data.train_urls:
        for shard in training_shards(cfg, index):
            if is_s3(shard.url):
                parse_s3_url(shard.url)
            elif not Path(shard.url).is_file():
                raise UserError(f"data.train_urls: shard '{shard.url}' not found "
                                "(expected a local .tar shard or s3://bucket/key)")


def _init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.cluster.address:
        ray.init(address=cfg.cluster.address, log_to_driver=True)
    else:
        export_key(cfg)  # the workers take it from the environment they inherit
        ray.init(num_cpus=cfg.cluster.local_cpus, include_dashboard=False)


def _use_gpu(cfg: Config) -> bool:
    import ray

    if cfg.cluster.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(cfg.cluster.use_gpu)


def summary_table(metrics: dict[str, Any]) -> str:
    """Final metrics as a table: one row per protocol × feature."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "eval":
            rows.setdefault((parts[1], parts[2]), {})[parts[3]] = value
    cols = ("rank1", "rank5", "rank10", "mAP", "mINP")
    lines = [f"{'protocol':<10}{'feature':<8}" + "".join(f"{c:>8}" for c in cols)]
    for (protocol, feature), vals in sorted(rows.items()):
        lines.append(f"{protocol:<10}{feature:<8}" + "".join(f"{100 * vals.get(c, float('nan')):>8.1f}" for c in cols))
    return "\n".join(lines)


def loop_config(cfg: Config, run_id: str) -> dict[str, Any]:
    """What the driver sends every worker: the config with its secrets redacted (Ray keeps it in the trainer's
    state and shows it to whoever can read the cluster) and the MLflow run. Workers take secrets from their own
    environment (`config.from_redacted`)."""
    return {"config": cfg.to_dict(redact=True), "run_id": run_id}


def run_job(cfg: Config) -> dict[str, Any]:
    """Train and evaluate as `cfg` says → the final metrics of rank 0."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from reid3dsl.train.loop import train_loop_per_worker

    setup_logging(None)
    start = time.perf_counter()
    cfg = prepare(cfg)
    tracking.export_credentials(cfg)  # before a local Ray starts: its workers inherit them
    _init_ray(cfg)
    use_gpu = _use_gpu(cfg)
    run_id, resumed = tracking.start_run(cfg, resume=bool(run_checkpoints(cfg)))
    storage_path, storage_fs = storage(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, run_id),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.cluster.num_workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cfg.cluster.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=cfg.cluster.name, storage_path=storage_path, storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.cluster.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    log.info("%s job '%s' with %d workers (%s)", "resuming" if resumed else "starting", cfg.cluster.name,
             cfg.cluster.num_workers, "GPU" if use_gpu else "CPU")
    try:
        result = trainer.fit()
    except Exception:
        tracking.end_run(cfg, run_id, status="FAILED")
        raise
    metrics = dict(result.metrics or {})
    tracking.end_run(cfg, run_id)
    wall = time.perf_counter() - start
    print(f"\n{cfg.cluster.name}: {metrics.get('epoch', '?')} epochs, {metrics.get('step', '?')} steps, "
          f"{metrics.get('throughput/img_per_s', float('nan')):.1f} img/s, wall {wall:.0f} s")
    print(summary_table(metrics))
    from reid3dsl.eval.reconstruction import format_figures

    figures = format_figures(metrics)
    if figures:
        print(figures)
    print(f"checkpoint: {result.checkpoint.path if result.checkpoint else None}")
    print(f"MLflow run {run_id} in {cfg.tracking.uri} (experiment '{cfg.tracking.experiment}')")
    if cfg.tracking.uri.startswith("sqlite:///"):
        print(f"open the UI: .venv/bin/mlflow ui --backend-store-uri {cfg.tracking.uri}")
    if not metrics:
        raise UserError(f"job '{cfg.cluster.name}': training reported no metrics")
    return metrics
