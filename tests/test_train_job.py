"""The main job end to end: `ray_job.py --config configs/smoke.yaml` with 2 Ray workers under DeepSpeed writes one
MLflow run with every loss term and the evaluation metrics, and a rerun of the same name resumes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reid3dsl.config import load_config
from reid3dsl.train.driver import run_job

pytestmark = pytest.mark.slow


def _run(workdir: Path, smoke_args: Callable[..., list[str]], *extra: str) -> dict:
    return run_job(load_config("configs/smoke.yaml", [*smoke_args(workdir, "job"), *extra]))


def test_smoke_job_logs_one_mlflow_run_and_resumes_where_it_stopped(
    ray_local: None, smoke_args: Callable[..., list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    first = _run(tmp_path, smoke_args)
    assert first["epoch"] == 2 and first["step"] == 4
    for protocol in ("standard", "cc", "sc"):
        for feature in ("rgb", "shape", "fused"):
            assert 0.0 <= first[f"eval/{protocol}/{feature}/rank1"] <= 1.0
            assert 0.0 <= first[f"eval/{protocol}/{feature}/mAP"] <= 1.0

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reid3dsl-smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    terms = {"ce_rgb", "triplet_rgb", "ce_shape", "triplet_shape", "keypoint", "silhouette", "displacement",
             "adversarial", "discriminator", "total"}
    assert {f"loss/{t}" for t in terms} <= set(run.data.metrics)
    assert {"lr", "throughput/img_per_s", "data/skipped", "eval/cc/fused/rank1", "eval/cc/fused/mAP"} <= set(
        run.data.metrics)
    # Nothing corrupt is planted in the synthesized set (a count that is not: test_fault_bad_numbers).
    assert run.data.metrics["data/skipped"] == 0
    assert run.data.params["model.streams"] == "both"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoint", "pictures"} <= artifacts
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "pictures")}
    assert "pictures/ranked_results.png" in pictures
    # smoke.yaml evaluates after each of its 2 epochs: one reconstruction picture each
    assert {"pictures/reconstruction_epoch001.png", "pictures/reconstruction_epoch002.png"} <= pictures

    model = client.download_artifacts(run.info.run_id, "checkpoint/model.pt", str(tmp_path))
    _evaluate_exported_model(Path(model), smoke_args(tmp_path, "job"), tmp_path, capsys)

    second = _run(tmp_path, smoke_args, "train.epochs=3")
    assert second["epoch"] == 3 and second["step"] == 6, "the rerun did not continue from the checkpoint"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "the resumed job opened a second MLflow run"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss/total")]
    assert steps == [1, 2, 3, 4, 5, 6]


def _evaluate_exported_model(model: Path, args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m reid3dsl.eval` on the job's exported model prints every protocol × feature and the reconstruction
    figures, and draws a picture."""
    from reid3dsl.eval.__main__ import main

    data_root = next(a.split("=", 1)[1] for a in args if a.startswith("data.root="))
    body = next(a for a in args if a.startswith("body.standin_dir="))
    capsys.readouterr()
    assert main(["--checkpoint", str(model), "--data", data_root, "--vis", str(tmp_path / "ranked.png"),
                 "--set", body]) == 0
    table = capsys.readouterr().out
    for protocol in ("standard", "cc", "sc"):
        for feature in ("rgb", "shape", "fused"):
            assert any(line.split()[:2] == [protocol, feature] for line in table.splitlines()), table
    # the reconstruction figures of the 3D stream against the rendered set's truth
    assert "3D reconstruction: silhouette IoU" in table and "body shape: mean r over beta dimensions" in table, table
    assert (tmp_path / "ranked.png").stat().st_size > 0
