"""`model.pt`, the trained network as a file: written and read here, and only here.

The file is `torch.save` of a plain dict — `config` (the nested config that rebuilds the model, secrets
redacted), `num_classes` (training identities) and `state_dict` (fp32 weights on CPU) — and is read with
`torch.load(weights_only=True)`, so a file from anywhere (an MLflow server, a colleague) can hold tensors and
plain containers only, never code. The body model is not in it (see `ThreeDSL`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from reid3dsl.config import Config, from_redacted, load_config
from reid3dsl.errors import UserError
from reid3dsl.models.threedsl import ThreeDSL, is_estimator

MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class SavedModel:
    """What a model.pt holds."""

    config: Config
    num_classes: int
    state_dict: dict[str, torch.Tensor]


def save_model(model: ThreeDSL, cfg: Config, num_classes: int, path: Path) -> Path:
    """Write the model's fp32 weights with the (redacted) config that rebuilds it to `path`."""
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    torch.save({"config": cfg.to_dict(redact=True), "num_classes": num_classes, "state_dict": state}, path)
    return path


def read_model(path: str | Path) -> SavedModel:
    """A model.pt → its contents. Secrets were redacted on export; they come back from this process's environment
    or unset. Anything else than a model.pt of `save_model` is one `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file '{path}': not found (expected a model.pt exported by the training job)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        tree = saved["config"]
        if not (isinstance(tree, dict) and all(isinstance(v, dict) for v in tree.values())):
            raise TypeError("config is not a mapping of sections")
        state = dict(saved["state_dict"])
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise TypeError("state_dict holds something other than named tensors")
        num_classes = int(saved["num_classes"])
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        raise UserError(f"model file '{path}': not a reid3dsl model.pt ({type(exc).__name__})") from None
    try:
        config = from_redacted(tree)
    except ValidationError as exc:  # e.g. written by a version with a config key this one no longer has
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"model file '{path}': its config does not fit this version of reid3dsl ({where}: "
                        f"{first['msg']})") from None
    return SavedModel(config, num_classes, state)


def load_model(path: str | Path, overrides: Sequence[str] = (),
               device: torch.device | None = None) -> tuple[Config, ThreeDSL]:
    """A model.pt → (its config with `overrides` applied, the trained model in eval mode on `device`)."""
    saved = read_model(path)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = Path(tmp) / "config.yaml"
        cfg_file.write_text(saved.config.to_yaml())
        cfg = load_config(cfg_file, overrides)
    # The regressor's starting pose is a buffer of the saved state: no need to load the pose prior for it.
    model = ThreeDSL.from_config(cfg, saved.num_classes, mean_pose=torch.eye(3).expand(24, 3, 3))
    try:
        model.load_state_dict(saved.state_dict)
    except RuntimeError as exc:
        raise UserError(f"model file '{path}': its weights do not fit the model its config describes ({exc})") from None
    return cfg, model.to(device or torch.device("cpu")).eval()


def init_estimator(model: ThreeDSL, path: str | Path) -> None:
    """Start the 3D estimator (E_3D, E_pose, E_shape) of `model` from the one in a model.pt — e.g. one trained with
    the projection losses alone — while its identity head starts anew (the classes may differ)."""
    state = {k: v for k, v in read_model(path).state_dict.items() if is_estimator(k)}
    wanted = {k for k in model.state_dict() if is_estimator(k)}
    if not wanted or set(state) != wanted:
        raise UserError(f"model.shape_init '{path}': its 3D stream does not match this one "
                        f"({len(set(state) ^ wanted)} differing tensors; same backbone, body model and MGS expected)")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UserError(f"model.shape_init '{path}': tensor sizes differ from this 3D stream ({exc})") from None
