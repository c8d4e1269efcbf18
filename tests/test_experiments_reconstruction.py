"""The reconstruction check's runner: its job differs from the base config only by evaluation cadence and names,
and the curve is read back from the MLflow history, one row per evaluated step."""

from __future__ import annotations

from pathlib import Path

import pytest

from reid3dsl.config import load_config
from reid3dsl.experiments import reconstruction


def test_the_job_is_the_base_config_evaluated_every_n_epochs_named_after_its_results_file() -> None:
    base = load_config("configs/ablation.yaml")
    cfg = reconstruction.job_config(base, every=5, out=Path("results/reconstruction-test.json"))
    changed = {k for k, v in cfg.flat().items() if base.flat().get(k) != v}
    assert changed == {"eval.every", "cluster.name", "tracking.experiment"}
    assert cfg.cluster.name == "reconstruction-test"
    # Other settings written to another file are another job: a rerun never resumes a job of other settings.
    other = load_config("configs/ablation.yaml", ["eval.split=val", "loss.silhouette_weight=0.1"])
    assert reconstruction.job_config(other, 5, Path("results/reconstruction-val-silhouette0.1.json")).cluster.name == (
        "reconstruction-val-silhouette0.1")


def test_the_curve_has_a_row_per_evaluated_step_from_the_logged_history(tmp_path: Path) -> None:
    from reid3dsl.train import tracking

    cfg = load_config("configs/ablation.yaml", [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                                "cluster.name=reconstruction-test"])
    assert tracking.metric_history(cfg, list(reconstruction.FIGURES)) == {}
    run_id, _ = tracking.start_run(cfg, resume=False)
    client = tracking._client(cfg)
    for step, iou, px in ((75, 0.5, 9.0), (150, 0.6, 7.5)):
        client.log_metric(run_id, "eval/3d/silhouette_iou", iou, step=step)
        client.log_metric(run_id, "eval/3d/keypoint_error_px", px, step=step)
    rows = reconstruction.curve(tracking.metric_history(cfg, list(reconstruction.FIGURES)))
    assert rows == [{"step": 75, "silhouette_iou": 0.5, "keypoint_error_px": 9.0},
                    {"step": 150, "silhouette_iou": 0.6, "keypoint_error_px": 7.5}]
    table = reconstruction.format_curve(rows).splitlines()
    assert len(table) == 3 and table[2].split()[:3] == ["150", "0.600", "7.500"]


def test_a_bad_cadence_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        reconstruction.main(["--every", "0"])
    assert exc.value.code == 2
    assert "--every 0: expected at least 1" in capsys.readouterr().err


def test_visibility_counts_the_pixels_each_beta_dimension_changes(tmp_path: Path, standin_dir: str) -> None:
    import json

    out = tmp_path / "vis.json"
    assert reconstruction.main(["--visibility", "--set", f"body.standin_dir={standin_dir}", "--set",
                                "data.sil_height=32", "--set", "data.sil_width=16", "--out", str(out)]) == 0
    sizes = json.loads(out.read_text())["sizes"]
    assert set(sizes) == {"32x16", "64x32"}
    small, large = sizes["32x16"], sizes["64x32"]
    assert len(small["changed_px"]) == 10 and all(v >= 0 for v in small["changed_px"])
    # Shape is visible, more of it at the larger size; a body four times the pixels changes more of them.
    assert max(small["changed_px"]) > 0 and sum(large["changed_px"]) > 2 * sum(small["changed_px"])
    assert large["body_px"] == pytest.approx(4 * small["body_px"], rel=0.1)
