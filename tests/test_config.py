"""The one typed config: YAML round trip, typed overrides, one-line rejections (exit 2 from CLIs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reid3dsl.config import REDACTED, Config, ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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
    assert cfg.storage.endpoint == "http://127.0.0.1:9000"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_inherits_its_base_chain_and_replaces_values_key_by_key(tmp_path: Path) -> None:
    _write(tmp_path, "common/root.yaml", "train: {lr: 0.1, epochs: 7, milestones: [1, 2, 3]}\nmodel: {mgs: false}\n")
    _write(tmp_path, "common/mid.yaml", "base: root.yaml\ntrain:\n  epochs: 8\n  milestones: [5]\n")
    child = _write(tmp_path, "child.yaml", "base: common/mid.yaml\ntrain:\n  lr: 0.2\ndata:\n  pad: 3\n")
    cfg = load_config(child, env={})
    assert cfg.train.lr == 0.2  # the child replaces the root's value
    assert cfg.train.epochs == 8  # the middle file replaces the root's, the child leaves it
    assert cfg.train.milestones == [5]  # a list is replaced whole, not merged
    assert cfg.model.mgs is False  # a section only the root names survives
    assert cfg.data.pad == 3 and cfg.train.momentum == Config().train.momentum


def test_precedence_is_base_then_file_then_set_and_the_environment_fills_only_unset_fields(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "tracking:\n  uri: sqlite:///base.db\ntrain:\n  lr: 0.1\n  epochs: 3\n  seed: 4\n")
    child = _write(tmp_path, "child.yaml", "base: base.yaml\ntrain:\n  lr: 0.2\n  epochs: 5\n")
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "RAY_ADDRESS": "ray://head:10001"}
    cfg = load_config(child, ["train.epochs=9"], env=env)
    assert cfg.train.seed == 4  # base only
    assert cfg.train.lr == 0.2  # child over base
    assert cfg.train.epochs == 9  # --set over child over base
    assert cfg.tracking.uri == "sqlite:///base.db"  # a value from the base file is not replaced by the environment
    assert cfg.cluster.address == "ray://head:10001"  # no file set it: the environment fills it


def test_an_error_names_the_file_in_the_chain_that_set_the_value(tmp_path: Path) -> None:
    base = _write(tmp_path, "base.yaml", "train:\n  lr: -1\n")
    child = _write(tmp_path, "child.yaml", "base: base.yaml\ntrain:\n  epochs: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(child, ["train.epochs=2"], env={})
    assert str(info.value) == f"config key 'train.lr' = -1 (in {base}): expected greater than 0"


def test_a_cycle_of_base_files_is_one_error_naming_the_files(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", "base: sub/b.yaml\n")
    b = _write(tmp_path, "sub/b.yaml", "base: ../a.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(a, env={})
    message = str(info.value)
    assert "\n" not in message and "cycle" in message
    assert str(a) in message and str(b) in message
    itself = _write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(itself, env={})


def test_a_missing_or_malformed_base_is_one_error_naming_both_files(tmp_path: Path) -> None:
    child = _write(tmp_path, "child.yaml", "base: nowhere.yaml\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(child, env={})
    looked = tmp_path / "nowhere.yaml"
    assert str(info.value) == f"config file '{child}': base 'nowhere.yaml' not found (looked for '{looked}')"
    listed = _write(tmp_path, "listed.yaml", "base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match=r"base = \['a.yaml', 'b.yaml'\]: expected the path of a YAML file"):
        load_config(listed, env={})


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(path: Path) -> None:
    cfg = load_config(path, env={})
    if path.name not in {"paper.yaml", "demo.yaml"}:
        assert cfg.cluster.name == path.stem, "a config's runs and checkpoints are named after it"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.lr=-1"], ["train.lr", "-1", "greater than 0"]),
        (["train.epochs=abc"], ["train.epochs", "'abc'", "integer"]),
        (["train.epochs=1.5"], ["train.epochs", "1.5", "integer"]),
        (["train.bogus=1"], ["unknown config key", "train.bogus", "epochs"]),
        # Storage credentials come from the environment (or the instance), never from a config file or --set.
        (["storage.secret_access_key=x"], ["unknown config key", "storage.secret_access_key", "endpoint"]),
        (["nosuch.key=1"], ["unknown config section", "nosuch", "data"]),
        (["model.backbone=vgg16"], ["model.backbone", "vgg16", "resnet18"]),
        (["cluster.use_gpu=maybe"], ["cluster.use_gpu", "maybe", "'auto'"]),
        (["data.flip_prob=2"], ["data.flip_prob", "2", "less than or equal to 1"]),
        (["train.batch_size=63"], ["train.batch_size", "63", "multiple of data.imgs_per_id"]),
        # The job name becomes a checkpoint folder and a quoted MLflow filter value.
        (["cluster.name=../x"], ["cluster.name", "'../x'", "plain name"]),
        (["cluster.name=../../../tmp/elsewhere"], ["cluster.name", "elsewhere", "plain name"]),
        (["cluster.name=a' OR '1'='1"], ["cluster.name", "plain name"]),
        (["cluster.name=.."], ["cluster.name", "plain name"]),
        (["data.max_image_side=8192"], ["data.max_image_side", "8192", "less than or equal to 4096"]),
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
    cfg = load_config(None, ["tracking.token=tok-123"])
    dumped = cfg.to_yaml()
    flat = cfg.flat()
    assert "tok-123" not in dumped and "tok-123" not in str(flat)
    assert yaml.safe_load(dumped)["tracking"]["token"] == REDACTED
    assert flat["tracking.token"] == REDACTED
    assert cfg.to_dict(redact=False)["tracking"]["token"] == "tok-123"


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
