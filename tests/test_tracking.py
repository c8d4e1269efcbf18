"""MLflow runs per job: a job that goes on from a checkpoint reuses its run; a job started afresh under a name
used before (its checkpoints gone) gets a new run, so histories and parameters of the two never mix."""

from __future__ import annotations

from pathlib import Path

from reid3dsl.config import load_config
from reid3dsl.train import tracking


def test_only_a_resumed_job_reuses_the_run_of_its_name(tmp_path: Path) -> None:
    cfg = load_config(None, [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "cluster.name=job",
                             "tracking.experiment=t", "train.epochs=20"])
    first, resumed = tracking.start_run(cfg, resume=False)
    assert not resumed
    again, resumed = tracking.start_run(cfg, resume=True)
    assert again == first and resumed
    cfg.train.epochs = 30  # a fresh job under the same name, with other settings
    fresh, resumed = tracking.start_run(cfg, resume=False)
    assert fresh != first and not resumed
    import mlflow

    client = mlflow.MlflowClient(cfg.tracking.uri)
    assert client.get_run(first).data.params["train.epochs"] == "20"
    assert client.get_run(fresh).data.params["train.epochs"] == "30"
    # ... and the next resume goes on with the newest run of that name.
    assert tracking.start_run(cfg, resume=True)[0] == fresh
