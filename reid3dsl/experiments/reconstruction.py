"""`python -m reid3dsl.experiments.reconstruction [--config configs/ablation.yaml] [--every 5] [--out PATH]`

The reconstruction check of the 3D stream: one training job with the ablation's 3DSL configuration, evaluated
every `--every` epochs on the configured identities (`eval.split`: test to report, val to choose), then the
curve of the reconstruction figures over the run — silhouette IoU, keypoint error in pixels of a 128-px crop,
β recovery r and shape identification — against the targets, printed and written as JSON with the final CC/SC
identity figures (what a setting costs ReID). Resumable: the job is named after its results file, so a rerun
with the same `--out` continues from that job's latest checkpoint (a finished job is re-evaluated), and a run
with other settings written elsewhere starts a job of its own.

`--visibility` trains nothing: it measures how many pixels of a crop each β dimension of the configured body
changes, at the silhouette size and twice it (`eval.reconstruction.beta_visibility`; results/beta-visibility.json),
which bounds what a silhouette at that size can tell about β.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reid3dsl.config import Config, add_config_args, config_from_args
from reid3dsl.errors import UserError, cli_main

FIGURES = ("eval/3d/silhouette_iou", "eval/3d/keypoint_error_px", "eval/3d/beta_r", "eval/3d/beta_r_raw",
           "eval/3d/beta_identification", "eval/3d/beta_identification_chance")
# The identity figures kept next to the reconstruction's: what a setting that helps the 3D stream costs ReID.
IDENTITY = tuple(f"eval/{protocol}/{feature}/{metric}" for protocol in ("cc", "sc")
                 for feature in ("fused", "rgb", "shape") for metric in ("rank1", "mAP"))
# The targets of the reconstruction issue: (figure, target, whether higher is better).
TARGETS = (("eval/3d/silhouette_iou", 0.75, True), ("eval/3d/keypoint_error_px", 4.0, False),
           ("eval/3d/beta_r", 0.7, True))


def job_config(base: Config, every: int, out: Path) -> Config:
    """The job: the base config evaluated every `every` epochs, named after its results file `out`, in the
    reconstruction experiment."""
    tree = base.to_dict(redact=False)
    tree["eval"]["every"] = every
    tree["cluster"]["name"] = out.stem
    tree["tracking"]["experiment"] = "reid3dsl-reconstruction"
    return Config.model_validate(tree)


def curve(history: dict[str, list[tuple[int, float]]]) -> list[dict[str, float]]:
    """MLflow histories of FIGURES → one row per evaluated step."""
    rows: dict[int, dict[str, float]] = {}
    for name, points in history.items():
        for step, value in points:
            rows.setdefault(step, {"step": step})[name.removeprefix("eval/3d/")] = value
    return [rows[s] for s in sorted(rows)]


def format_curve(rows: list[dict[str, float]]) -> str:
    cols = ("silhouette_iou", "keypoint_error_px", "beta_r", "beta_r_raw", "beta_identification")
    lines = [f"{'step':>6}" + "".join(f"{c:>22}" for c in cols)]
    for row in rows:
        lines.append(f"{int(row['step']):>6}" + "".join(f"{row.get(c, float('nan')):>22.3f}" for c in cols))
    return "\n".join(lines)


def _command(argv: list[str] | None) -> str:
    return " ".join(["python -m reid3dsl.experiments.reconstruction", *(argv if argv is not None else sys.argv[1:])])


def visibility(cfg: Config, out: Path, argv: list[str] | None) -> int:
    from reid3dsl.eval.reconstruction import beta_visibility
    from reid3dsl.precision import machine

    h, w = cfg.data.sil_height, cfg.data.sil_width
    table = beta_visibility(cfg, [(h, w), (2 * h, 2 * w)])
    out.parent.mkdir(parents=True, exist_ok=True)
    body = cfg.body.model_path or f"stand-in ({cfg.body.standin_resolution})"
    out.write_text(json.dumps({"command": _command(argv), "machine": machine(), "body": body, "sizes": table},
                              indent=1))
    for size, row in table.items():
        print(f"{size}: body {row['body_px']:.0f} px; pixels changed by +1 in beta_k: "
              + " ".join(f"{k}:{v:.1f}" for k, v in enumerate(row["changed_px"])))
    print(f"results: {out}")
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    from reid3dsl.precision import machine
    from reid3dsl.train import tracking
    from reid3dsl.train.driver import run_job

    parser = argparse.ArgumentParser(prog="python -m reid3dsl.experiments.reconstruction",
                                     description=__doc__.split("\n")[0])
    add_config_args(parser, default="configs/ablation.yaml")
    parser.add_argument("--every", type=int, default=5, help="evaluate every N epochs (the curve's points)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default results/reconstruction-SPLIT"
                        ".json, or results/beta-visibility.json)")
    parser.add_argument("--visibility", action="store_true", help="only measure the pixels each β dimension "
                        "changes (no training)")
    args = parser.parse_args(argv)
    if args.every < 1:
        raise UserError(f"--every {args.every}: expected at least 1")
    base = config_from_args(args)
    if args.visibility:
        return visibility(base, args.out or Path("results/beta-visibility.json"), argv)
    out = args.out or Path(f"results/reconstruction-{base.eval.split}.json")
    cfg = job_config(base, args.every, out)
    final = run_job(cfg)
    rows = curve(tracking.metric_history(cfg, list(FIGURES)))
    met = {name: (final[name] >= target if higher else final[name] <= target)
           for name, target, higher in TARGETS if name in final}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": _command(argv),
        "machine": {**machine(), "ray_workers": cfg.cluster.num_workers,
                    "cpus_per_worker": cfg.cluster.cpus_per_worker},
        "split": cfg.eval.split, "steps": final.get("step"),
        "final": {k: final[k] for k in FIGURES if k in final},
        "identity": {k: final[k] for k in IDENTITY if k in final},
        "targets": {name: {"target": target, "higher_is_better": higher, "met": met.get(name)}
                    for name, target, higher in TARGETS},
        "curve": rows,
    }, indent=1))
    print(format_curve(rows))
    print("identity: " + ", ".join(f"{name.removeprefix('eval/')} {100 * final[name]:.1f}" for name in IDENTITY
                                   if name in final and name.endswith("rank1")))
    print("targets: " + ", ".join(f"{name.removeprefix('eval/3d/')} {'met' if ok else 'missed'}"
                                  for name, ok in met.items()))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
