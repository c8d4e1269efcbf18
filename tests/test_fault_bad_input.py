"""Bad input everywhere: each command line with one thing wrong prints one line naming that thing and what was
expected, exits with status 2, shows no traceback and leaves nothing half-written.

Every CLI runs at least once as a real subprocess (all at once in a module fixture: each is mostly Python
start-up); the other variants of the same CLI call its `main` in this process, which goes through the same
`cli_main` wrapper."""

from __future__ import annotations

import pickle
import runpy
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIS: dict[str, list[str]] = {
    "ray_job": [str(ROOT / "ray_job.py")],
    "shards": ["-m", "shards"],
    "standin": ["-m", "reid3dsl.body.standin"],
    "convert": ["-m", "reid3dsl.body.convert"],
    "eval": ["-m", "reid3dsl.eval"],
}
CASES = (
    "smpl_missing", "smpl_malformed", "smpl_not_a_model", "prior_missing", "prior_empty", "prior_malformed",
    "shard_missing", "shard_malformed_url", "data_root_missing", "config_value", "keypoints_unreadable",
    "duplicate_sample_mid_build", "dataset_root_missing", "standin_out_is_a_file", "convert_garbage",
    "eval_truncated_checkpoint",
)
# One case per CLI runs as a subprocess.
SUBPROCESS = {"smpl_missing", "keypoints_unreadable", "standin_out_is_a_file", "convert_garbage",
              "eval_truncated_checkpoint"}


def _entry(cli: str) -> Callable[[list[str]], object]:
    """The `main(argv)` of a CLI, for the in-process variants."""
    if cli == "ray_job":
        return runpy.run_path(str(ROOT / "ray_job.py"))["main"]
    module = {"shards": "shards.__main__", "standin": "reid3dsl.body.standin", "convert": "reid3dsl.body.convert",
              "eval": "reid3dsl.eval.__main__"}[cli]
    return __import__(module, fromlist=["main"]).main


@dataclass
class Case:
    """A command with one bad input: `needles` must be in its error line, `absent` paths must not exist after it,
    `leftovers_in` folders must hold no hidden temporary files."""

    cli: str
    args: list[str]
    needles: tuple[str, ...]
    absent: tuple[Path, ...] = ()
    leftovers_in: tuple[Path, ...] = ()


def _list_dataset(root: Path, n: int = 4, lines: list[str] | None = None) -> Path:
    """A `list`-format data set of `n` images, one identity each (or the given train.txt lines)."""
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "imgs" / f"{i}.jpg"), rng.integers(0, 255, (64, 32, 3), dtype=np.uint8))
    (root / "train.txt").write_text("\n".join(lines or [f"imgs/{i}.jpg {i + 1} 0" for i in range(n)]))
    return root


def _cases(tmp: Path, data: str, standin: str) -> dict[str, Case]:
    job_out = tmp / "job"
    job = ["--config", str(ROOT / "configs/smoke.yaml"),
           "--set", f"data.root={data}", "--set", "data.synthesize=false", "--set", f"body.standin_dir={standin}",
           "--set", f"cluster.storage_path={job_out / 'runs'}", "--set", f"tracking.uri=sqlite:///{job_out / 'm.db'}"]
    job_absent = (job_out / "runs", job_out / "m.db")

    garbage_pkl = tmp / "garbage.pkl"
    garbage_pkl.write_bytes(b"\x80\x04this is not a pickle")
    not_smpl = tmp / "not_smpl.pkl"
    not_smpl.write_bytes(pickle.dumps({"v_template": [0.0]}))
    prior_bad = tmp / "prior_bad"
    prior_bad.mkdir()
    (prior_bad / "seq.npz").write_bytes(b"PK\x03\x04 truncated zip")
    prior_empty = tmp / "prior_empty"
    prior_empty.mkdir()

    src = _list_dataset(tmp / "src")
    dup = _list_dataset(tmp / "src_dup", lines=["imgs/0.jpg 1 0", "imgs/1.jpg 2 0", "imgs/0.jpg 1 0"])
    bad_kp = tmp / "kp.json"
    bad_kp.write_text('[{"image_id": "imgs/0.jpg", "keypoints": [1, 2')
    build = ["build", "--dataset", "list", "--masks", "none"]
    not_a_dir = tmp / "a_file"
    not_a_dir.write_text("x")
    truncated_model = tmp / "model.pt"
    truncated_model.write_bytes(b"PK\x03\x04" + b"\0" * 100)

    return {
        "smpl_missing": Case("ray_job", [*job, "--set", f"body.model_path={tmp / 'SMPL_NEUTRAL.pkl'}"],
                             ("body.model_path", "not found"), job_absent),
        "smpl_malformed": Case("ray_job", [*job, "--set", f"body.model_path={garbage_pkl}"],
                               ("body.model_path", "garbage.pkl", "not a readable SMPL pickle"), job_absent),
        "smpl_not_a_model": Case("ray_job", [*job, "--set", f"body.model_path={not_smpl}"],
                                 ("body.model_path", "not_smpl.pkl", "not a SMPL model"), job_absent),
        "prior_missing": Case("ray_job", [*job, "--set", f"body.prior_path={tmp / 'amass'}"],
                              ("body.prior_path", "not a folder"), job_absent),
        "prior_empty": Case("ray_job", [*job, "--set", f"body.prior_path={prior_empty}"],
                            ("body.prior_path", "no .npz files"), job_absent),
        "prior_malformed": Case("ray_job", [*job, "--set", f"body.prior_path={prior_bad}"],
                                ("body.prior_path", "none of its 1 .npz files is a readable"), job_absent),
        "shard_missing": Case("ray_job", [*job, "--set", f"data.train_urls=['{tmp / 'train-000000.tar'}']"],
                              ("data.train_urls", "train-000000.tar", "not found"), job_absent),
        "shard_malformed_url": Case("ray_job", [*job, "--set", "data.train_urls=['s3:///train-000000.tar']"],
                                    ("s3:///train-000000.tar", "expected s3://bucket/prefix"), job_absent),
        "data_root_missing": Case("ray_job", [*job, "--set", f"data.root={tmp / 'nodata'}"],
                                  ("nodata", "no index.json"), job_absent),
        "config_value": Case("ray_job", [*job, "--set", "train.lr=-1"], ("train.lr", "-1", "greater than 0"),
                             job_absent),
        "keypoints_unreadable": Case("shards", [*build, "--root", str(src), "--out", str(tmp / "out_kp"),
                                      "--keypoints", str(bad_kp)],
                                     ("kp.json",), (tmp / "out_kp" / "list",), (tmp / "out_kp",)),
        "duplicate_sample_mid_build": Case("shards", [*build, "--root", str(dup), "--out", str(tmp / "out_dup")],
                                           ("imgs/0",), (tmp / "out_dup" / "list",), (tmp / "out_dup",)),
        "dataset_root_missing": Case("shards", [*build, "--root", str(tmp / "none"), "--out", str(tmp / "out_none")],
                                     ("--root", "not a folder"), (tmp / "out_none" / "list",)),
        "standin_out_is_a_file": Case("standin", ["--out", str(not_a_dir / "body")],
                                      ("body.standin_dir", "cannot create it"), (not_a_dir / "body",)),
        "convert_garbage": Case("convert", [str(garbage_pkl), str(tmp / "conv.npz")],
                                ("garbage.pkl", "not a readable SMPL pickle"), (tmp / "conv.npz",)),
        "eval_truncated_checkpoint": Case("eval", ["--checkpoint", str(truncated_model),
                                           "--data", data], ("model.pt", "not a reid3dsl model.pt")),
    }


@dataclass
class Outcome:
    code: object
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, standin_dir: str) -> dict[str, Case]:
    from shards.__main__ import main as shards_main

    tmp = tmp_path_factory.mktemp("bad-input")
    good = _list_dataset(tmp / "good", n=8)
    assert shards_main(["build", "--dataset", "list", "--root", str(good), "--out", str(tmp / "data"),
                        "--masks", "none"]) == 0
    made = _cases(tmp, str(tmp / "data" / "list"), standin_dir)
    assert set(made) == set(CASES) and {made[n].cli for n in SUBPROCESS} == set(CLIS)
    return made


@pytest.fixture(scope="module")
def subprocess_outcomes(cases: dict[str, Case]) -> dict[str, Outcome]:
    def run(name: str) -> Outcome:
        case = cases[name]
        proc = subprocess.run([sys.executable, *CLIS[case.cli], *case.args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    with ThreadPoolExecutor(max_workers=len(SUBPROCESS)) as pool:
        return dict(zip(SUBPROCESS, pool.map(run, SUBPROCESS), strict=True))


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_exit_2_no_traceback_nothing_half_written(
    name: str, cases: dict[str, Case], subprocess_outcomes: dict[str, Outcome], capsys: pytest.CaptureFixture[str]
) -> None:
    case = cases[name]
    if name in SUBPROCESS:
        out = subprocess_outcomes[name]
    else:
        with pytest.raises(SystemExit) as exit_info:
            _entry(case.cli)(case.args)
        captured = capsys.readouterr()
        out = Outcome(exit_info.value.code, captured.out, captured.err)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.code == 2, f"exit {out.code}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr[-3000:]
    assert len(errors) == 1, out.stderr[-3000:]
    for needle in case.needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    for path in case.absent:
        assert not path.exists(), f"{path} was left behind"
    for folder in case.leftovers_in:
        hidden = [p.name for p in folder.glob(".*")] if folder.exists() else []
        assert hidden == [], f"temporary files left in {folder}: {hidden}"
