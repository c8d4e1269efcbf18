"""The stand-in's files and their command line: `ensure_standin(out_dir)` generates the model once into
`out_dir/smpl/` (written atomically, reused while the generator version and settings match), `main` is
`python -m reid3dsl.body.standin`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path

from reid3dsl.body.standin.model import RESOLUTIONS, generate
from reid3dsl.errors import UserError, cli_main
from reid3dsl.log import setup_logging

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the generated model changes, so cached copies are regenerated


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename (safe when several processes generate at once)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def standin_paths(out_dir: str | Path) -> tuple[Path, Path, Path]:
    """(model pickle, vertex ids json, metadata json) of a stand-in folder."""
    d = Path(out_dir) / "smpl"
    return d / "SMPL_NEUTRAL.pkl", d / "vertex_ids.json", d / "standin.json"


def ensure_standin(out_dir: str | Path, resolution: str = "low", seed: int = 0, force: bool = False) -> Path:
    """Generate the stand-in into `out_dir` unless it is already there with these settings; → `out_dir`."""
    pkl, ids_path, meta_path = standin_paths(out_dir)
    meta = {"generator": GENERATOR_VERSION, "resolution": resolution, "seed": seed}
    if not force and pkl.is_file() and ids_path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return Path(out_dir)
        except (OSError, ValueError):
            pass
    try:
        pkl.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"body.standin_dir '{out_dir}': cannot create it ({exc.strerror})") from None
    log.info("generating the stand-in body (%s, seed %d) in %s", resolution, seed, pkl.parent)
    model = generate(resolution, seed)
    write_atomic(ids_path, json.dumps(model.vertex_ids, indent=1).encode())
    write_atomic(pkl, pickle.dumps(model.smpl, protocol=4))
    write_atomic(meta_path, json.dumps(meta).encode())
    return Path(out_dir)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reid3dsl.body.standin",
        description="The stand-in body: a generated SMPL-format model for machines without the licensed SMPL file.",
    )
    parser.add_argument("--out", required=True, help="folder; the model goes to OUT/smpl/SMPL_NEUTRAL.pkl")
    parser.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="low")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    setup_logging()
    out = ensure_standin(args.out, args.resolution, args.seed, force=args.force)
    from reid3dsl.body.convert import read_smpl

    pkl = standin_paths(out)[0]
    data = read_smpl(pkl)
    print(f"{pkl}: {data['v_template'].shape[0]} vertices, {data['f'].shape[0]} faces, "
          f"{data['shapedirs'].shape[-1]} shape components")
