"""The science check's runner: each variant's config differs from the base only by its switches, seeds and
names; the summary is the mean ± std over seeds; the CLI trains every variant × seed as one MLflow experiment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reid3dsl.config import load_config
from reid3dsl.experiments import ablation


def test_each_variant_flips_only_its_switches() -> None:
    base = load_config("configs/ablation.yaml")
    names = set()
    for variant in ablation.VARIANTS:
        cfg = ablation.variant_config(base, variant, seed=2)
        assert cfg.train.seed == 2
        names.add(cfg.cluster.name)
        changed = {k for k, v in cfg.flat().items() if base.flat().get(k) != v}
        assert changed <= {"train.seed", "cluster.name", "tracking.run_name", "model.streams", "loss.adversarial",
                           "model.mgs", "loss.silhouette", "data.shape_input"}, variant
        # equal compute: data, budget, optimiser and augmentations are the base's for every variant
        assert cfg.data.model_copy(update={"shape_input": base.data.shape_input}) == base.data
        assert cfg.train.epochs == base.train.epochs and cfg.train.lr == base.train.lr
    assert len(names) == len(ablation.VARIANTS)
    assert ablation.variant_config(base, "rgb", 0).model.streams == "rgb"
    assert ablation.variant_config(base, "3dsl-no-disc", 0).loss.adversarial is False
    assert ablation.variant_config(base, "3dsl-no-mgs", 0).model.mgs is False
    assert ablation.variant_config(base, "3dsl-no-sil", 0).loss.silhouette is False
    assert base.data.shape_input == "proxy"
    assert ablation.variant_config(base, "3dsl-image", 0).data.shape_input == "image"


def _metrics(feature: str, cc: float, with_3d: bool) -> dict[str, float]:
    out = {f"eval/cc/{feature}/rank1": cc, f"eval/cc/{feature}/mAP": cc / 2,
           f"eval/sc/{feature}/rank1": 0.9, f"eval/sc/{feature}/mAP": 0.8}
    if with_3d:
        out |= {"eval/cc/shape/rank1": cc / 4, "eval/3d/silhouette_iou": 0.5, "eval/3d/keypoint_error_px": 9.0,
                "eval/3d/beta_r": 0.4, "eval/3d/beta_identification": 0.2}
    return out


def test_summary_is_mean_and_std_over_seeds_and_the_table_marks_what_a_variant_lacks() -> None:
    results = {"rgb": [_metrics("rgb", 0.1, False), _metrics("rgb", 0.3, False)],
               "3dsl": [_metrics("fused", 0.2, True), _metrics("fused", 0.4, True)]}
    summary = ablation.summarize(results)
    mean, std = summary["rgb"]["cc_rank1"]
    assert mean == pytest.approx(0.2) and std == pytest.approx(0.1414, abs=1e-4)
    assert summary["3dsl"]["cc_mAP"][0] == pytest.approx(0.15)
    assert summary["3dsl"]["cc_rank1_shape"][0] == pytest.approx(0.075)
    assert "sil_iou" not in summary["rgb"]
    rows = ablation.format_table(summary, seeds=2).splitlines()
    assert rows[0] == "mean ± std over 2 seed(s)"
    rgb_row = next(r for r in rows if r.startswith("| rgb |"))
    assert "20.0 ± 14.1" in rgb_row and rgb_row.count("–") == 5
    row_3dsl = next(r for r in rows if r.startswith("| 3dsl |"))
    assert "30.0 ± 14.1" in row_3dsl and "| 9.0 ± 0.0 | 0.40 ± 0.00 | 20.0 ± 0.0 |" in row_3dsl


def test_unknown_variant_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ablation.main(["--config", "configs/ablation.yaml", "--variants", "rgb,3dsl-huge"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3dsl-huge" in err


@pytest.mark.slow
def test_ablation_trains_each_variant_as_runs_of_one_experiment(
    ray_local: None, smoke_args: Callable[..., list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import mlflow

    sets = [x for item in smoke_args(tmp_path, "abl") for x in ("--set", item)]
    out = tmp_path / "ablation.json"
    assert ablation.main(["--config", "configs/smoke.yaml", *sets, "--seeds", "1",
                          "--variants", "rgb,3dsl-no-mgs", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| rgb | rgb |" in printed and "| 3dsl-no-mgs | fused |" in printed
    saved = json.loads(out.read_text())
    assert set(saved["runs"]) == {"rgb", "3dsl-no-mgs"}
    assert "eval/cc/rgb/rank1" in saved["runs"]["rgb"][0]
    assert "eval/3d/silhouette_iou" in saved["runs"]["3dsl-no-mgs"][0]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reid3dsl-smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["3dsl-no-mgs seed 0", "rgb seed 0"]
    assert {r.data.params["model.streams"] for r in runs} == {"rgb", "both"}
