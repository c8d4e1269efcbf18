"""The one typed config: YAML round trip, typed overrides, one-line rejections (exit 2 from CLIs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reid3dsl.config import REDACTED, Config, ConfigError, load_config


def test_yaml_round_trip_gives_the_same_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=0.01", "eval.protocols=[cc]", "model.streams=rgb"])
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg
    assert again.eval.protocols == ["cc"]


def test_overrides_are_parsed_to_the_fields_type() -> None:
    cfg = load_config(
        None,
        ["train.lr=1e-3", "train.epochs=3", "data.synthesize=true", "train.milestones=[5, 9]",
         "body.model_path=/x/SMPL_NEUTRAL.pkl", "cluster.use_gpu=false", "train.grad_clip=2"],
    )
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.data.synthesize is True
    assert cfg.train.milestones == [5, 9]
    assert cfg.body.model_path == "/x/SMPL_NEUTRAL.pkl"
    assert cfg.cluster.use_gpu is False
    assert cfg.train.grad_clip == 2.0 and isinstance(cfg.train.grad_clip, float)
    # YAML 1.1 reads on/off as booleans; the on/off/auto field still gets its word.
    assert load_config(None, ["loss.clothes_aware=off"]).loss.clothes_aware == "off"
    assert load_config(None, ["loss.clothes_aware=on"]).loss.clothes_aware == "on"


def test_override_beats_yaml_and_yaml_beats_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("tracking:\n  uri: sqlite:///a.db\ntrain:\n  lr: 0.2\n")
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    cfg = load_config(path, ["train.lr=0.3"], env=env)
    assert cfg.train.lr == 0.3
    assert cfg.tracking.uri == "sqlite:///a.db"
    assert cfg.data.s3_endpoint == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.lr=-1"], ["train.lr", "-1", "greater than 0"]),
        (["train.epochs=abc"], ["train.epochs", "'abc'", "integer"]),
        (["train.epochs=1.5"], ["train.epochs", "1.5", "integer"]),
        (["train.bogus=1"], ["unknown config key", "train.bogus", "epochs"]),
        (["nosuch.key=1"], ["unknown config section", "nosuch", "data"]),
        (["model.backbone=vgg16"], ["model.backbone", "vgg16", "resnet18"]),
        (["cluster.use_gpu=maybe"], ["cluster.use_gpu", "maybe", "'auto'"]),
        (["data.flip_prob=2"], ["data.flip_prob", "2", "less than or equal to 1"]),
        (["train.batch_size=63"], ["train.batch_size", "63", "multiple of data.imgs_per_id"]),
        (["lr=0.1"], ["lr", "section.key=value"]),
        (["train.lr"], ["train.lr", "section.key=value"]),
    ],
)
def test_every_rejection_is_one_line_naming_key_value_and_expectation(
    overrides: list[str], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message


def test_bad_files_are_rejected_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"train.lr.*'fast'.*in .*wrong.yaml"):
        load_config(wrong)


def test_secrets_are_redacted_in_the_dump() -> None:
    cfg = load_config(None, ["data.s3_secret_access_key=hunter2-secret", "tracking.token=tok-123"])
    dumped = cfg.to_yaml()
    flat = cfg.flat()
    assert "hunter2-secret" not in dumped and "tok-123" not in dumped
    assert yaml.safe_load(dumped)["data"]["s3_secret_access_key"] == REDACTED
    assert flat["tracking.token"] == REDACTED
    assert "hunter2-secret" not in str(flat)
    assert cfg.to_dict(redact=False)["data"]["s3_secret_access_key"] == "hunter2-secret"


def test_defaults_validate() -> None:
    assert Config().train.precision == "auto"


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    script = tmp_path / "cli.py"
    script.write_text(
        "import argparse\n"
        "from reid3dsl.config import add_config_args, config_from_args\n"
        "from reid3dsl.errors import cli_main\n"
        "@cli_main\n"
        "def main():\n"
        "    p = argparse.ArgumentParser(); add_config_args(p)\n"
        "    config_from_args(p.parse_args())\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), "--set", "train.lr=-5"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.lr" in lines[0] and "-5" in lines[0]
