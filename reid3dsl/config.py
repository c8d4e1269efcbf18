"""The one typed configuration of reid3dsl.

A `Config` has the sections data, storage, body, model, loss, train, eval, tracking and cluster. It is loaded
from YAML (a file may name `base: other.yaml`, relative to its own folder, and set only the `section.key`s it
changes; a base may have its own), then `--set section.key=value` overrides are applied (each value parsed as
YAML, then to the field's type), then the few environment variables the project honours fill fields that none
set.
This module is the only place that reads the environment. Any bad key, type or range is rejected with
one line naming the key, the value and what was expected (`ConfigError`, a `UserError`, so CLIs exit 2).
`to_yaml()` dumps the resolved config with secrets redacted, for MLflow.

Secrets are the `SecretStr` fields (tracking.token, tracking.password, cluster.checkpoint_key): `to_dict`,
`to_yaml` and `flat` show them as '***', and `from_redacted` turns such a dict back into a config whose secrets
come from this process's environment. A password in `tracking.uri` (`http://user:password@host`) is moved into
tracking.username and tracking.password when the config is loaded, so the URI itself never carries it; a config
holding a password in any URL is refused (URLs are logged and stored as they are).
"""

from __future__ import annotations

import argparse
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from reid3dsl import MAX_IMAGE_SIDE
from reid3dsl.errors import UserError

REDACTED = "***"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
PLAIN_NAME_RULE = "letters, digits, '.', '_' and '-' only, and not '.' or '..'"


class ConfigError(UserError):
    """A configuration value or file that cannot be used."""


def is_plain_name(text: str) -> bool:
    """Whether `text` is safe as one path component and inside a quoted filter value: no separator, scheme,
    quote, space or parent reference (`PLAIN_NAME_RULE`)."""
    return bool(_PLAIN_NAME.fullmatch(text)) and text not in (".", "..")


def _url_password(text: str) -> str | None:
    """The password in URL `text`'s `user:password@` part (None: none, or not a URL)."""
    if "://" not in text:
        return None
    try:
        return urllib.parse.urlsplit(text).password
    except ValueError:  # e.g. a bad port: the field's own use reports it
        return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class DataConfig(_Section):
    """Where shards come from and how samples become batches."""

    root: str = Field("data/shards/synth", description="data set folder or s3:// prefix holding index.json")
    train_urls: list[str] = Field(
        default_factory=list, description="explicit training shards (local or s3://); default: from index.json"
    )
    synthesize: bool = Field(False, description="render the embedded cloth-changing set into root if missing")
    synth_identities: int = Field(
        150, ge=2, description="identities of the embedded set, split by synth_val_share and synth_test_share"
    )
    synth_val_share: float = Field(
        0.2, ge=0.0, lt=1.0, description="share of the identities held out for validation (val_query/val_gallery)"
    )
    synth_test_share: float = Field(
        0.3, gt=0.0, lt=1.0, description="share of the identities held out for test (query/gallery)"
    )
    synth_outfits: int = Field(3, ge=1)
    synth_images_per_outfit: int = Field(8, ge=2)
    synth_seed: int = 0
    synth_height: int = Field(128, ge=32, le=1024, description="the embedded set's native crop height (pixels)")
    synth_width: int = Field(64, ge=16, le=1024, description="the embedded set's native crop width (pixels)")
    height: int = Field(128, ge=16, le=1024, description="RGB stream input height")
    width: int = Field(64, ge=8, le=1024, description="RGB stream input width")
    shape_height: int = Field(128, ge=16, le=1024, description="3D stream input height")
    shape_width: int = Field(64, ge=8, le=1024, description="3D stream input width")
    shape_input: Literal["image", "proxy"] = Field(
        "image",
        description="what E_3D sees: image = the RGB crop (as published); proxy = the 2D body proxy (silhouette "
        "and left/right keypoint heatmaps, as STRAPS regresses SMPL from), which carries no clothing texture",
    )
    sil_height: int = Field(32, ge=8, le=1024, description="silhouette loss resolution (height)")
    sil_width: int = Field(16, ge=4, le=1024, description="silhouette loss resolution (width)")
    imgs_per_id: int = Field(4, ge=1, description="K of P x K identity-balanced batches")
    loader_workers: int = Field(1, ge=0, le=64)
    shuffle_buffer: int = Field(512, ge=0)
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    erase_prob: float = Field(0.5, ge=0.0, le=1.0)
    pad: int = Field(10, ge=0, description="random-crop padding in pixels")
    max_image_side: int = Field(
        MAX_IMAGE_SIDE, ge=16, le=MAX_IMAGE_SIDE,
        description="a shard image or mask whose header claims a larger side is skipped before it is decoded",
    )


class StorageConfig(_Section):
    """S3-compatible object storage, for shards and checkpoints alike (s3:// in data.root, data.train_urls,
    cluster.storage_path). No credentials here: boto3 and pyarrow read them from the environment
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), ~/.aws or the instance's identity."""

    endpoint: str | None = Field(
        None, description="S3 endpoint URL (MinIO, moto, ...); None: AWS (env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)"
    )
    region: str | None = Field(None, description="(env: AWS_REGION, AWS_DEFAULT_REGION)")
    retries: int = Field(5, ge=0, le=100, description="retries of a failed read, upload or listing")
    backoff: float = Field(0.5, ge=0, le=60, description="seconds before the first retry; doubles each retry")


class BodyConfig(_Section):
    """The body model, the pose/shape prior and the differentiable projection."""

    model_path: str | None = Field(None, description="real SMPL .npz or .pkl, or a folder; None: stand-in body")
    standin_dir: str = "data/body"
    standin_resolution: Literal["low", "full"] = "low"
    standin_seed: int = 0
    prior_path: str | None = Field(None, description="folder of AMASS-format npz files; None: stand-in sampler")
    prior_frame_stride: int = Field(5, ge=1, description="use every n-th frame of the AMASS-format sequences")
    num_betas: int = Field(10, ge=1, le=300)
    focal_length: float = Field(5000.0, gt=0, description="camera focal length in pixels of a crop focal_res high")
    focal_res: float = Field(224.0, gt=0, description="crop height (pixels) that focal_length refers to")
    sil_blur_px: float = Field(
        1.0, gt=0, le=16,
        description="soft silhouette edge, in pixels of the render: faces this far from a pixel still add 1e-4 "
        "(the blur scales with the render size, so every size gets gradients off the edge)",
    )
    faces_per_pixel: int = Field(
        16, ge=1, le=100,
        description="faces blended per pixel; must cover the faces within the blur: 16 for the low stand-in at "
        "a 1-pixel blur (8 left 7% of the body uncovered at 64x32), 32 for the full one or real SMPL",
    )


class ModelConfig(_Section):
    """The two-stream network."""

    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    shape_backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    pretrained_path: str | None = Field(None, description="local torchvision weights for the RGB backbone")
    shape_pretrained_path: str | None = Field(None, description="local torchvision weights for E_3D")
    last_stride: Literal[1, 2] = 1
    streams: Literal["rgb", "3d", "both"] = "both"
    shape_feat_dim: int = Field(256, ge=8, le=4096)
    mgs: bool = True
    num_parts: int = Field(6, ge=1, le=24, description="body-part features of MGS")
    regressor_iterations: int = Field(3, ge=1, le=10)
    max_displacement: float = Field(0.05, gt=0, le=1, description="bound of |δ| per axis, metres")
    shape_init: str | None = Field(None, description="model.pt whose 3D stream (not its identity head) starts this one")


class LossConfig(_Section):
    """Loss terms and their weights."""

    ce_weight: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    triplet_weight: float = Field(1.0, ge=0)
    triplet_margin: float = Field(0.3, ge=0)
    clothes_aware: Literal["auto", "on", "off"] = "auto"
    shape_ce_weight: float = Field(1.0, ge=0)
    shape_triplet_weight: float = Field(1.0, ge=0)
    keypoint_weight: float = Field(1.0, ge=0)
    silhouette: bool = True
    silhouette_weight: float = Field(1.0, ge=0)
    silhouette_fraction: float = Field(0.5, gt=0, le=1, description="share of the batch rendered")
    displacement_weight: float = Field(0.1, ge=0)
    adversarial: bool = True
    adversarial_weight: float = Field(0.1, ge=0)

    @field_validator("clothes_aware", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare on/off as a boolean, in files and in --set alike.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class TrainConfig(_Section):
    """Optimisation, precision, checkpoints."""

    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(50, ge=1, description="optimizer steps per epoch on every worker")
    batch_size: int = Field(64, ge=2, description="global batch (all workers together)")
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    lr_3d: float = Field(1e-4, gt=0, description="Adam learning rate of the 3D estimator")
    lr_d: float = Field(1e-4, gt=0, description="discriminator learning rate")
    warmup_epochs: int = Field(1, ge=0)
    assp_epochs: int = Field(
        0, ge=0,
        description="first epochs of the budget in which the 3D stream learns from the projection and adversarial "
        "losses only (ASSP warm-up; its identity losses start after)",
    )
    schedule: Literal["step", "cosine"] = "cosine"
    milestones: list[int] = Field(default_factory=lambda: [40, 70])
    gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float = Field(5.0, ge=0, description="max gradient norm; 0 disables")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    zero_stage: int = Field(1, ge=0, le=3)
    seed: int = 0
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    max_bad_steps: int = Field(5, ge=1, description="consecutive non-finite steps before aborting")


class EvalConfig(_Section):
    """Evaluation protocols and feature variants."""

    every: int = Field(1, ge=1, description="epochs between evaluations")
    split: Literal["test", "val"] = Field(
        "test", description="identities evaluated: test (query/gallery) or validation (val_query/val_gallery, for "
        "choosing settings without looking at test)",
    )
    protocols: list[Literal["standard", "cc", "sc", "prcc"]] = Field(
        default_factory=lambda: ["standard", "cc", "sc"],
        description="prcc: one random gallery image per identity, mean over prcc_draws draws",
    )
    features: list[Literal["rgb", "shape", "fused"]] = Field(default_factory=lambda: ["rgb", "shape", "fused"])
    metric: Literal["cosine", "euclidean"] = Field("cosine", description="distance between features")
    flip: bool = False
    rerank: bool = False
    rerank_k1: int = Field(20, ge=1, description="k-reciprocal neighbourhood size")
    rerank_k2: int = Field(6, ge=1, description="neighbours averaged in query expansion (1 = none); <= k1 + 1")
    rerank_lambda: float = Field(0.3, ge=0, le=1, description="weight of the original distance after re-ranking")
    prcc_draws: int = Field(10, ge=1, description="PRCC single-shot galleries drawn and averaged")
    prcc_seed: int = 0
    max_rank: int = Field(50, ge=1)
    chunk_size: int = Field(512, ge=1, description="queries per chunk in the metric kernel (bounds its memory)")
    vis_queries: int = Field(8, ge=0, description="queries in the ranked-results picture")
    vis_topk: int = Field(10, ge=1, description="results shown per query in the ranked-results picture")


class TrackingConfig(_Section):
    """MLflow."""

    uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI (env: MLFLOW_TRACKING_URI)")
    experiment: str = "reid3dsl"
    run_name: str | None = None
    token: SecretStr | None = Field(None, description="MLflow server token, if the server needs one")
    username: str | None = Field(None, description="MLflow server user (env: MLFLOW_TRACKING_USERNAME)")
    password: SecretStr | None = Field(None, description="MLflow server password (env: MLFLOW_TRACKING_PASSWORD)")


class ClusterConfig(_Section):
    """Ray: where to run and how many workers."""

    address: str | None = Field(None, description="Ray address; None: start a local Ray (env: RAY_ADDRESS)")
    num_workers: int = Field(2, ge=1)
    use_gpu: Literal["auto", True, False] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)
    local_cpus: int | None = Field(None, ge=1, description="num_cpus of a locally started Ray")
    storage_path: str = Field("runs", description="checkpoint storage: local folder or s3://bucket/prefix")
    name: str = Field("reid3dsl", description="job name: its checkpoint folder and MLflow run tag")
    max_failures: int = Field(2, ge=-1)
    checkpoint_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of checkpoint manifests, the same on every node and across restarts "
        "(env: REID3DSL_CHECKPOINT_KEY); None: unsigned")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # The name becomes a folder under storage_path and a value in MLflow filter strings.
        if not is_plain_name(value):
            raise ValueError(f"expected a plain name ({PLAIN_NAME_RULE})")
        return value


class Config(_Section):
    """The resolved configuration: the only object passed around."""

    data: DataConfig = Field(default_factory=DataConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    body: BodyConfig = Field(default_factory=BodyConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        for section in type(self).model_fields:
            for key, value in getattr(self, section):
                texts = value if isinstance(value, list) else [value]
                if any(isinstance(t, str) and _url_password(t) is not None for t in texts):
                    raise ValueError(f"config key '{section}.{key}': holds a URL with a password, which would be "
                                     "logged; expected credentials in the environment (AWS_ACCESS_KEY_ID/"
                                     "AWS_SECRET_ACCESS_KEY, an instance profile or IRSA; MLFLOW_TRACKING_PASSWORD)")
        if self.train.batch_size % self.data.imgs_per_id:
            raise ValueError(
                f"train.batch_size = {self.train.batch_size}: expected a multiple of "
                f"data.imgs_per_id = {self.data.imgs_per_id}"
            )
        return self

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain nested dict; secrets become '***' unless `redact` is False."""
        out = self.model_dump(mode="python")
        for section in out.values():
            for key, value in section.items():
                if isinstance(value, SecretStr):
                    section[key] = REDACTED if redact else value.get_secret_value()
        return out

    def to_yaml(self) -> str:
        """The resolved config as YAML, secrets redacted."""
        return yaml.safe_dump(self.to_dict(redact=True), sort_keys=False)

    def flat(self) -> dict[str, str]:
        """`section.key` → string value (secrets redacted), e.g. for MLflow params."""
        return {
            f"{section}.{key}": str(value)
            for section, values in self.to_dict(redact=True).items()
            for key, value in values.items()
        }


# Environment variables honoured, and the field each fills when neither YAML nor --set gave it.
ENV_FIELDS: dict[str, tuple[str, ...]] = {
    "storage.endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "storage.region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "tracking.uri": ("MLFLOW_TRACKING_URI",),
    "tracking.token": ("MLFLOW_TRACKING_TOKEN",),
    "tracking.username": ("MLFLOW_TRACKING_USERNAME",),
    "tracking.password": ("MLFLOW_TRACKING_PASSWORD",),
    "cluster.address": ("RAY_ADDRESS",),
    "cluster.checkpoint_key": ("REID3DSL_CHECKPOINT_KEY",),
}


def export_to_environment(cfg: Config, fields: Sequence[str]) -> None:
    """Put the set values of `fields` (ENV_FIELDS names) into this process's environment under their first
    variable: the inverse of reading them. MLflow takes its credentials from there only, and the workers of a Ray
    started by this process inherit it (`from_redacted`) — never the job's config, Ray's runtime_env or a command
    line, which Ray's dashboard and `ps` show."""
    for name in fields:
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if value is not None:
            os.environ[ENV_FIELDS[name][0]] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _move_uri_credentials(tree: dict[str, Any], origins: dict[str, str]) -> None:
    """`tracking.uri` = `scheme://user:password@host...` → the URI without them, tracking.username and
    tracking.password (MLflow logs and reports the URI it talks to; the password field is redacted)."""
    uri = tree.get("tracking", {}).get("uri") if isinstance(tree.get("tracking"), dict) else None
    if not isinstance(uri, str) or _url_password(uri) is None:
        return
    parts = urllib.parse.urlsplit(uri)
    origin = origins.get("tracking.uri", "")
    _set_path(tree, "tracking.uri", urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])),
              origin, origins)
    _set_path(tree, "tracking.username", urllib.parse.unquote(parts.username or ""), origin, origins)
    _set_path(tree, "tracking.password", urllib.parse.unquote(parts.password or ""), origin, origins)


def from_redacted(tree: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """A config dict written by `to_dict(redact=True)` → its `Config`, each redacted secret taken from `env`
    (default: this process's environment, through ENV_FIELDS) or unset. Raises pydantic's ValidationError."""
    env = os.environ if env is None else env
    restored = {section: dict(values) if isinstance(values, Mapping) else values for section, values in tree.items()}
    for section, values in restored.items():
        for key, value in values.items() if isinstance(values, dict) else ():
            if value == REDACTED:
                names = ENV_FIELDS.get(f"{section}.{key}", ())
                values[key] = next((env[n] for n in names if env.get(n)), None)
    _move_uri_credentials(restored, {})  # a dict written before URIs were stripped of them
    return Config.model_validate(restored)


def _describe(err: Mapping[str, Any], origins: Mapping[str, str]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    # Literal/union errors put the variant into loc; report the field.
    parts = loc.split(".")
    field = ".".join(parts[:2]) if len(parts) > 2 and parts[0] in Config.model_fields else loc
    origin = origins.get(field, "")
    where = f" ({origin})" if origin else ""
    if err["type"] == "extra_forbidden":
        section = field.split(".")[0]
        model = Config.model_fields.get(section)
        if model is None or field.count(".") == 0:
            known = ", ".join(Config.model_fields)
            return f"unknown config section '{field}'{where}: expected one of {known}"
        known = ", ".join(model.annotation.model_fields)  # type: ignore[union-attr]
        return f"unknown config key '{field}'{where}: expected one of {known}"
    if err["type"] == "value_error" and not field:
        return str(err["msg"]).removeprefix("Value error, ")
    msg = str(err["msg"]).removeprefix("Value error, ")
    msg = msg.replace("Input should be", "expected").replace("Input ", "expected input ")
    return f"config key '{field}' = {err.get('input')!r}{where}: {msg}"


def _set_path(tree: dict[str, Any], dotted: str, value: Any, origin: str, origins: dict[str, str]) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override '{dotted}' ({origin}): expected section.key=value, e.g. train.lr=0.01")
    section, key = parts
    node = tree.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"config section '{section}' ({origin}): expected a mapping, got {node!r}")
    node[key] = value
    origins[dotted] = origin


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` → (dotted key, value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _read_yaml(p: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file '{p}': not valid YAML{at}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{p}': expected a mapping of sections, got {type(loaded).__name__}")
    return loaded


def _file_chain(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """`path` and the files its `base:` names, transitively, as (file, sections) with the deepest base first."""
    if not path.is_file():
        raise ConfigError(f"config file '{path}': not found (expected a YAML file, e.g. configs/demo.yaml)")
    chain: list[tuple[Path, dict[str, Any]]] = []
    p = path
    while True:
        loaded = _read_yaml(p)
        base = loaded.pop("base", None)
        chain.append((p, loaded))
        if base is None:
            return chain[::-1]
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(
                f"config file '{p}': base = {base!r}: expected the path of a YAML file, relative to '{p.parent}'"
            )
        nxt = p.parent / base
        if not nxt.is_file():
            raise ConfigError(f"config file '{p}': base '{base}' not found (looked for '{nxt}')")
        if any(nxt.resolve() == q.resolve() for q, _ in chain):
            cycle = " -> ".join(str(q) for q, _ in [*chain, (nxt, {})])
            raise ConfigError(f"config file '{path}': its base files form a cycle: {cycle}")
        p = nxt


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Config:
    """YAML file (optional, with its `base:` chain) + `section.key=value` overrides + honoured environment →
    validated `Config`. Precedence, lowest first: field default, base file(s), the file, `--set`; the
    environment fills only fields that none of these set. A file replaces its base's values key by key (a list
    is replaced whole); every value's origin (the file that set it, `--set` or the variable) is kept for errors."""
    env = os.environ if env is None else env
    tree: dict[str, Any] = {}
    origins: dict[str, str] = {}
    files = _file_chain(Path(path)) if path is not None else []
    for p, loaded in files:
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(f"config section '{section}' in '{p}': expected a mapping, got {values!r}")
            for key, value in values.items():
                _set_path(tree, f"{section}.{key}", value, f"in {p}", origins)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value, "from --set", origins)
    for dotted, names in ENV_FIELDS.items():
        if dotted in origins:
            continue
        value = next((env[n] for n in names if env.get(n)), None)
        if value is not None:
            _set_path(tree, dotted, value, f"from ${[n for n in names if env.get(n)][0]}", origins)
    _move_uri_credentials(tree, origins)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], origins)) from None


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """`--config PATH` and repeatable `--set section.key=value` on a CLI."""
    parser.add_argument("--config", default=default, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set train.lr=0.01",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config named by `add_config_args` options."""
    return load_config(args.config, args.overrides)
