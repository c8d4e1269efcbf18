"""MLflow tracking: one run per job name, created by the driver, written to by world rank 0.

The driver (`start_run`) resolves the tracking URI to an absolute one (Ray workers may run in another working
directory), reuses the run of the same job name when a job resumes, and logs the resolved config. Rank 0 of the
workers buffers per-step metrics in a `MetricBuffer` and flushes them only after a checkpoint is committed, so a
restart from that checkpoint never logs a step twice and MLflow shows one continuous run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from reid3dsl.config import PLAIN_NAME_RULE, Config, export_to_environment, is_plain_name

log = logging.getLogger(__name__)
NAME_TAG = "reid3dsl.job"


def resolve_tracking_uri(uri: str, base: Path | None = None) -> str:
    """`sqlite:///relative.db` → `sqlite:////abs/relative.db` (other URIs unchanged)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(((base or Path.cwd()) / uri[len(prefix):]).resolve())
    return uri


def _artifact_location(uri: str) -> str | None:
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        return (Path(uri[len(prefix):]).parent / "mlartifacts").resolve().as_uri()
    return None


def export_credentials(cfg: Config) -> None:
    """Put the config's MLflow credentials into this process's environment (`config.export_to_environment`)."""
    export_to_environment(cfg, ("tracking.token", "tracking.username", "tracking.password"))


def _client(cfg: Config) -> Any:
    import mlflow

    export_credentials(cfg)
    return mlflow.MlflowClient(tracking_uri=cfg.tracking.uri)


def _latest_run_id(client: Any, exp_id: str, job: str) -> str | None:
    """The id of the latest run tagged with job name `job` in experiment `exp_id` (None: there is none)."""
    # MLflow filter strings have no escape inside a quoted value: only a plain name (as cluster.name is
    # validated to be) can be put between quotes without changing the filter.
    if not is_plain_name(job):
        raise ValueError(f"job name {job!r}: expected a plain name ({PLAIN_NAME_RULE})")
    runs = client.search_runs([exp_id], filter_string=f"tags.`{NAME_TAG}` = '{job}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def start_run(cfg: Config, resume: bool) -> tuple[str, bool]:
    """Create the MLflow run, or with `resume` (the job has a checkpoint to go on from) reuse the latest run of
    the same job name → (run_id, resumed). A job started afresh under an old name gets a run of its own, so
    its history and parameters never mix with the old run's."""
    client = _client(cfg)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        cfg.tracking.experiment, artifact_location=_artifact_location(cfg.tracking.uri)
    )
    run_id = _latest_run_id(client, exp_id, cfg.cluster.name) if resume else None
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        log.info("MLflow: resuming run %s of job '%s'", run_id, cfg.cluster.name)
        return run_id, True
    run = client.create_run(exp_id, run_name=cfg.tracking.run_name or cfg.cluster.name,
                            tags={NAME_TAG: cfg.cluster.name})
    run_id = run.info.run_id
    from mlflow.entities import Param

    params = [Param(k, v[:6000]) for k, v in cfg.flat().items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    log_text(cfg, run_id, cfg.to_yaml(), "config.yaml")
    return run_id, False


def metric_history(cfg: Config, names: list[str]) -> dict[str, list[tuple[int, float]]]:
    """The logged (step, value) history of each metric in `names` of the latest run of job `cfg.cluster.name`
    ({} where there is no such run; [] for a metric it never logged)."""
    client = _client(cfg)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    run_id = _latest_run_id(client, exp.experiment_id, cfg.cluster.name) if exp else None
    if run_id is None:
        return {}
    return {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name)) for name in names}


def log_text(cfg: Config, run_id: str, text: str, name: str) -> None:
    """Store `text` as artifact `name` of the run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        _client(cfg).log_artifact(run_id, str(path))


def log_artifact(cfg: Config, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Upload a file or folder to the run's artifacts."""
    path = Path(path)
    client = _client(cfg)
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def end_run(cfg: Config, run_id: str, status: str = "FINISHED") -> None:
    _client(cfg).set_terminated(run_id, status=status)


class MetricBuffer:
    """Per-step metrics held on rank 0 until the checkpoint they belong to is committed."""

    def __init__(self, cfg: Config, run_id: str) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.pending: list[tuple[str, float, int]] = []

    def add(self, metrics: dict[str, float], step: int) -> None:
        self.pending.extend((k, float(v), step) for k, v in metrics.items())

    def flush(self) -> None:
        """Write the pending metrics (in batches of MLflow's limit) and clear them."""
        if not self.pending:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, s) for k, v, s in self.pending]
        client = _client(self.cfg)
        for i in range(0, len(metrics), 1000):
            client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
        self.pending.clear()
