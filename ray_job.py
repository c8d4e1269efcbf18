"""The main job: config → prepared data and body model → Ray `TorchTrainer.fit` → summary, all in MLflow.

    python ray_job.py --config configs/demo.yaml [--set section.key=value ...]
    ray job submit --working-dir . -- python ray_job.py --config configs/smoke.yaml

Rerunning with the same `cluster.name` (and storage) resumes from the latest checkpoint, in the same MLflow run.
"""

from __future__ import annotations

import argparse
import sys

from reid3dsl.config import add_config_args, config_from_args
from reid3dsl.errors import cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser, default="configs/demo.yaml")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from reid3dsl.train.driver import run_job

    run_job(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
