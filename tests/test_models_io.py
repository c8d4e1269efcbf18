"""model.pt and the public FeatureExtractor: a saved model comes back with the same features, a file that would
run code is refused, and the README's five-line example works."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from reid3dsl.config import Config
from reid3dsl.errors import UserError
from reid3dsl.models.io import load_model, read_model, save_model
from reid3dsl.models.threedsl import ThreeDSL


def _config(standin_dir: str, **model: object) -> Config:
    return Config.model_validate({
        "data": {"height": 64, "width": 32, "shape_height": 64, "shape_width": 32, "shape_input": "proxy"},
        "body": {"standin_dir": standin_dir},
        "model": {"shape_feat_dim": 32, "num_parts": 2, **model},
    })


def _saved(tmp_path: Path, cfg: Config) -> tuple[ThreeDSL, Path]:
    torch.manual_seed(0)
    model = ThreeDSL.from_config(cfg, num_classes=5).eval()
    return model, save_model(model, cfg, 5, tmp_path / "model.pt")


def test_a_saved_model_loads_with_the_same_weights_and_without_the_body_model(
    tmp_path: Path, standin_dir: str
) -> None:
    model, path = _saved(tmp_path, _config(standin_dir))
    saved = read_model(path)
    assert saved.num_classes == 5 and not any(k.startswith("body.") for k in saved.state_dict)
    _, loaded = load_model(path)
    image, proxy = torch.randn(2, 3, 64, 32), torch.rand(2, 3, 64, 32)
    for name, feat in model.extract(image, proxy).items():
        assert torch.equal(feat, loaded.extract(image, proxy)[name])


def test_a_model_file_whose_config_this_version_does_not_know_names_the_key(tmp_path: Path) -> None:
    # A model.pt written by a version with a config key since removed (e.g. body.sil_gamma) says which key.
    path = tmp_path / "model.pt"
    torch.save({"config": {"body": {"sil_gamma": 1e-4}}, "num_classes": 1, "state_dict": {}}, path)
    with pytest.raises(UserError, match=r"does not fit this version of reid3dsl \(body.sil_gamma: Extra inputs"):
        read_model(path)


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))

    marker = ""


def test_a_model_file_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _RunsCode.marker = str(marker)
    path = tmp_path / "model.pt"
    torch.save({"config": {}, "num_classes": 1, "state_dict": {"w": _RunsCode()}}, path)
    with pytest.raises(UserError, match="not a reid3dsl model.pt"):
        read_model(path)
    path.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(UserError, match="not a reid3dsl model.pt"):
        read_model(path)
    assert not marker.exists()


def test_the_readme_feature_extractor_example_runs(tmp_path: Path, standin_dir: str) -> None:
    _, path = _saved(tmp_path, _config(standin_dir))
    crops = [np.random.default_rng(i).integers(0, 255, (128, 64, 3), dtype=np.uint8) for i in range(3)]
    masks = [np.zeros((128, 64), np.uint8) for _ in crops]
    keypoints = [np.zeros((17, 3), np.float32) for _ in crops]
    # The README's example, as written there.
    from reid3dsl import FeatureExtractor

    extract = FeatureExtractor(path)
    features = extract(crops, masks=masks, keypoints=keypoints)
    assert features.shape == (3, 512 + 32 + 2 * 16) and features.dtype == torch.float32
    rgb = FeatureExtractor(path, feature="rgb")(crops)  # the RGB stream alone needs no mask or keypoints
    assert rgb.shape == (3, 512)
    with pytest.raises(UserError, match="masks= and keypoints="):
        extract(crops)
    image_path = tmp_path / "crop.jpg"
    import cv2

    cv2.imwrite(str(image_path), crops[0][..., ::-1])
    assert FeatureExtractor(path, feature="rgb")([image_path]).shape == (1, 512)
