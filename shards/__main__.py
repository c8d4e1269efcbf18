"""`python -m shards {build,synth,upload,inspect}`: the command line of the shards package.

Every subcommand also takes `--config FILE` and `--set section.key=value`: S3 endpoint, region and retries come
from the `storage` section (AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL fill the endpoint, AWS_REGION the region);
credentials from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance identity).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from reid3dsl.config import add_config_args, config_from_args
from reid3dsl.errors import cli_main
from reid3dsl.log import setup_logging
from shards.adapters import ADAPTERS

log = logging.getLogger("shards")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shards", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="shards from a ReID data set folder")
    b.add_argument("--dataset", required=True, choices=sorted(ADAPTERS))
    b.add_argument(
        "--root",
        required=True,
        type=Path,
        help="the data set's own folder (which one, per data set: docs/shard-format.md); for list: a folder "
        "holding train.txt, query.txt, gallery.txt with lines 'relative/path pid camid [clothes]'",
    )
    b.add_argument("--out", required=True, help="output folder or s3://bucket/prefix; writes <out>/<name>/")
    b.add_argument("--name", default=None, help="data set name in the output (default: --dataset)")
    b.add_argument("--masks", default="grabcut", help="grabcut (default), none, or a folder of mask files")
    b.add_argument("--keypoints", default=None, help="COCO-format keypoint JSON, or 'detect' (Keypoint R-CNN)")
    b.add_argument("--detector-weights", type=Path, default=None, help="local keypointrcnn_resnet50_fpn weights")
    b.add_argument("--workers", type=int, default=1, help="worker processes")
    b.add_argument("--shard-size", type=int, default=1000, help="samples per shard")

    s = sub.add_parser("synth", help="render the embedded cloth-changing data set")
    s.add_argument("--out", required=True, type=Path, help="output folder; writes <out>/synth/")
    s.add_argument("--identities", type=int, default=None,
                   help="identities in all, split by data.synth_val_share and synth_test_share "
                   "(default: data.synth_identities)")
    s.add_argument("--outfits", type=int, default=None, help="outfits per identity (default: data.synth_outfits)")
    s.add_argument("--images-per-outfit", type=int, default=None, help="default: data.synth_images_per_outfit")
    s.add_argument("--seed", type=int, default=None, help="default: data.synth_seed")

    u = sub.add_parser("upload", help="copy a local shard folder to S3")
    u.add_argument("src", type=Path)
    u.add_argument("dest", help="s3://bucket/prefix")

    i = sub.add_parser("inspect", help="counts per split and a picture of samples")
    i.add_argument("path", help="a data set folder or s3:// prefix holding index.json")
    i.add_argument("--grid", type=Path, default=None, help="write a PNG of samples with masks and keypoints")

    for p in (b, s, u, i):
        add_config_args(p)
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    if args.command == "synth":  # its flags are shorthands for data.synth_* values
        flags = {"identities": args.identities, "outfits": args.outfits,
                 "images_per_outfit": args.images_per_outfit, "seed": args.seed}
        args.overrides += [f"data.synth_{key}={value}" for key, value in flags.items() if value is not None]
    cfg = config_from_args(args)
    start = time.perf_counter()
    if args.command == "build":
        from shards.build import BuildOptions, build

        opts = BuildOptions(
            dataset=args.dataset,
            root=args.root,
            out=args.out,
            masks=args.masks,
            keypoints=args.keypoints,
            detector_weights=args.detector_weights,
            workers=args.workers,
            shard_size=args.shard_size,
            name=args.name,
        )
        print(build(opts, cfg.storage))
    elif args.command == "synth":
        from reid3dsl.data.synth import DATASET, Recipe, synthesize

        print(synthesize(args.out / DATASET, Recipe.from_config(cfg.data), cfg.body))
    elif args.command == "upload":
        from shards.upload import upload

        upload(args.src, args.dest, cfg.storage)
    else:
        from shards.inspect import format_report, inspect

        report = inspect(args.path, cfg.storage, grid=args.grid, max_side=cfg.data.max_image_side)
        print(format_report(report))
        if args.grid is not None:
            print(f"grid: {args.grid}")
    log.info("%s done in %.1fs", args.command, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
