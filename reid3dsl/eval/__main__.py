"""`python -m reid3dsl.eval --checkpoint model.pt --data PATH_OR_URL [--protocol ...] [--feature ...] [--vis out.png]`

Evaluates an exported network (`model.pt`, logged by the training job under the MLflow run's `checkpoint/`)
on a data set's query and gallery shards and prints the metrics table; `--vis` draws the ranked results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reid3dsl.errors import UserError, cli_main

PROTOCOLS = ("standard", "cc", "sc", "prcc")


@cli_main
def main(argv: list[str] | None = None) -> int:
    from reid3dsl.eval.extract import EVAL_SPLITS, RANKS, extract_split, score
    from reid3dsl.eval.extractor import FeatureExtractor
    from reid3dsl.log import setup_logging

    parser = argparse.ArgumentParser(prog="python -m reid3dsl.eval", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="model.pt exported by the training job")
    parser.add_argument("--data", required=True, help="data set folder or s3:// prefix holding index.json")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: every protocol that applies")
    parser.add_argument("--feature", choices=("rgb", "shape", "fused"), default=None, help="default: all built")
    parser.add_argument("--flip", action="store_true", help="average features with the flipped image's")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (eval.rerank_* settings)")
    parser.add_argument("--vis", type=Path, default=None, help="write a ranked-results PNG here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    setup_logging(None)
    overrides = [f"data.root={args.data}", "data.synthesize=false", f"eval.flip={str(args.flip).lower()}",
                 f"eval.rerank={str(args.rerank).lower()}",
                 *args.overrides]
    extractor = FeatureExtractor(args.checkpoint, flip=args.flip, overrides=overrides)
    cfg = extractor.cfg
    query, gallery = (extract_split(extractor.model, cfg, split, 0, 1, extractor.device, extractor.precision)
                      for split in EVAL_SPLITS[cfg.eval.split])
    if not query.keys or not gallery.keys:
        raise UserError(f"data set '{args.data}': the query or gallery split is empty")
    has_clothes = bool((query.clothes >= 0).all() and (gallery.clothes >= 0).all())
    features = [args.feature] if args.feature else [f for f in ("rgb", "shape", "fused") if f in query.feats]
    missing = [f for f in features if f not in query.feats]
    if missing:
        raise UserError(f"--feature {missing[0]}: this network has only {', '.join(query.feats)}")
    protocols = [args.protocol] if args.protocol else ["standard", *(["cc", "sc"] if has_clothes else [])]
    print(f"{'protocol':<10}{'feature':<8}" + "".join(f"{'R' + str(r):>8}" for r in RANKS) + f"{'mAP':>8}{'mINP':>8}")
    for protocol in protocols:
        if protocol != "standard" and not has_clothes:
            raise UserError(f"--protocol {protocol}: needs clothes labels; data set '{args.data}' has none")
        for feature in features:
            res = score(cfg, query, gallery, protocol, feature)
            print(f"{protocol:<10}{feature:<8}" + "".join(f"{100 * res['cmc'][r - 1]:>8.1f}" for r in RANKS)
                  + f"{100 * res['mAP']:>8.1f}{100 * res['mINP']:>8.1f}")
    if "betas" in query.feats:
        from reid3dsl.eval.reconstruction import format_figures, quality_figures, quality_sums, shape_recovery

        model = extractor.model
        split = EVAL_SPLITS[cfg.eval.split][0]
        figures = quality_figures(quality_sums(model, cfg, split, 0, 1, extractor.device, extractor.precision))
        print(format_figures({**figures, **shape_recovery(model, query, gallery)}))
    if args.vis is not None:
        from reid3dsl.eval.extract import ranked_picture

        ranked_picture(cfg, query, gallery, args.vis, feature=features[0], mode=protocols[0])
        print(f"ranked results: {args.vis}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
