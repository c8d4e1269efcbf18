"""`python -m reid3dsl.experiments.ablation [--config configs/ablation.yaml] [--seeds 3] [--variants ...]`

Trains each variant with each seed at equal compute (same data set, epochs, steps, batch, augmentations) as
runs of one MLflow experiment, then prints mean ± std over seeds of the clothes-changing (CC) rank-1 and mAP
of each variant's test feature, its same-clothes (SC) rank-1, and how well the 3D stream explains the images
(silhouette IoU and keypoint error against the renderer's ground truth, β recovery against the stored true
β). Runs are resumable: a finished run is re-evaluated from its final checkpoint instead of retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from reid3dsl.config import Config, add_config_args, config_from_args, parse_override
from reid3dsl.errors import UserError, cli_main

# variant → (overrides, the feature that variant is tested with)
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "rgb": (("model.streams=rgb",), "rgb"),
    "3dsl": ((), "fused"),
    "3dsl-no-disc": (("loss.adversarial=false",), "fused"),
    "3dsl-no-mgs": (("model.mgs=false",), "fused"),
    "3dsl-no-sil": (("loss.silhouette=false",), "fused"),
    # E_3D on the RGB crop, as published (the base config feeds it the texture-free body proxy).
    "3dsl-image": (("data.shape_input=image",), "fused"),
}
DEFAULT_VARIANTS = ("rgb", "3dsl", "3dsl-no-disc", "3dsl-no-mgs")
COLUMNS = ("cc_rank1", "cc_mAP", "sc_rank1", "sc_mAP", "cc_rank1_shape", "sil_iou", "kp_error_px", "beta_r",
           "beta_id")
# Columns that are not percentages: (scale, digits) for the table.
PLAIN = {"kp_error_px": (1.0, 1), "beta_r": (1.0, 2)}


def variant_config(base: Config, variant: str, seed: int) -> Config:
    """The config of one run: the base with the variant's switches, the seed and a run name."""
    overrides, _ = VARIANTS[variant]
    tree = base.to_dict(redact=False)
    for item in overrides:
        key, value = parse_override(item)  # typed as `--set` types it
        section, field = key.split(".")
        tree[section][field] = value
    tree["train"]["seed"] = seed
    tree["cluster"]["name"] = f"{base.cluster.name}-{variant}-seed{seed}"
    tree["tracking"]["run_name"] = f"{variant} seed {seed}"
    return Config.model_validate(tree)


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """variant → column → (mean, std) over its seeds (std 0 for a single seed)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for variant, runs in results.items():
        feature = VARIANTS[variant][1]
        cols = {
            "cc_rank1": [r[f"eval/cc/{feature}/rank1"] for r in runs],
            "cc_mAP": [r[f"eval/cc/{feature}/mAP"] for r in runs],
            "sc_rank1": [r[f"eval/sc/{feature}/rank1"] for r in runs],
            "sc_mAP": [r[f"eval/sc/{feature}/mAP"] for r in runs],
            # The 3D stream's own feature, to see whether shape alone separates identities across clothes.
            "cc_rank1_shape": [r["eval/cc/shape/rank1"] for r in runs if "eval/cc/shape/rank1" in r],
            "sil_iou": [r["eval/3d/silhouette_iou"] for r in runs if "eval/3d/silhouette_iou" in r],
            "kp_error_px": [r["eval/3d/keypoint_error_px"] for r in runs if "eval/3d/keypoint_error_px" in r],
            "beta_r": [r["eval/3d/beta_r"] for r in runs if "eval/3d/beta_r" in r],
            "beta_id": [r["eval/3d/beta_identification"] for r in runs if "eval/3d/beta_identification" in r],
        }
        out[variant] = {
            k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in cols.items() if v
        }
    return out


def format_table(summary: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    """A Markdown table of the summary (percentages for retrieval and IoU, image heights for keypoints)."""
    head = ("| variant | feature | CC rank-1 | CC mAP | SC rank-1 | SC mAP | CC rank-1, shape feature alone "
            "| 3D silhouette IoU | 3D keypoint error (px of 128) | β recovery r (size projected out) "
            "| β identification |")
    lines = [f"mean ± std over {seeds} seed(s)", head, "|" + "---|" * (len(COLUMNS) + 2)]
    for variant, cols in summary.items():
        cells = []
        for c in COLUMNS:
            if c not in cols:
                cells.append("–")
                continue
            mean, std = cols[c]
            scale, digits = PLAIN.get(c, (100.0, 1))
            cells.append(f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}")
        lines.append(f"| {variant} | {VARIANTS[variant][1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    from reid3dsl.train.driver import run_job

    parser = argparse.ArgumentParser(prog="python -m reid3dsl.experiments.ablation", description=__doc__.split("\n")[0])
    add_config_args(parser, default="configs/ablation.yaml")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation.json"), help="results as JSON")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserError(f"--variants {args.variants!r}: expected names from {', '.join(VARIANTS)}")
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: expected at least 1")
    base = config_from_args(args)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        for variant in variants:
            metrics = run_job(variant_config(base, variant, seed))
            results[variant].append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            # Written after every run, so an interrupted ablation still shows what it has finished.
            done = {v: r for v, r in results.items() if r}
            args.out.write_text(json.dumps({"config": base.to_dict(), "runs": done, "summary": summarize(done)},
                                           indent=1))
    table = format_table(summarize(results), args.seeds)
    print(table)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
