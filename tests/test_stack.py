"""The pinned stack installs and works together: imports, a ResNet forward, a differentiable render."""

from __future__ import annotations

import importlib

import pytest
import torch

PINNED = ["torch", "torchvision", "pytorch3d", "pytorch3d.renderer", "smplx", "deepspeed", "ray.train",
          "webdataset", "mlflow", "boto3", "cv2", "moto", "pydantic", "yaml", "tqdm"]


@pytest.mark.parametrize("module", PINNED)
def test_every_pinned_package_imports(module: str) -> None:
    importlib.import_module(module)


def test_pins_are_the_measured_ones() -> None:
    from importlib.metadata import version

    import torchvision

    assert torch.__version__.startswith("2.12.1")
    assert torchvision.__version__.startswith("0.27.1")
    assert version("easypytorch3d") == "0.7.9.post1"
    assert version("webdataset") == "1.0.2"
    assert version("smplx") == "0.1.28"
    assert version("deepspeed").startswith("0.19.")
    assert version("ray").startswith("2.60.")
    assert version("mlflow").startswith("3.17.")


def test_resnet_forward() -> None:
    import torchvision

    model = torchvision.models.resnet18(num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 64))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_soft_silhouette_render_backward_gives_finite_nonzero_gradients() -> None:
    from pytorch3d.renderer import (
        BlendParams,
        FoVPerspectiveCameras,
        MeshRasterizer,
        MeshRenderer,
        RasterizationSettings,
        SoftSilhouetteShader,
    )
    from pytorch3d.utils import ico_sphere

    mesh = ico_sphere(2)
    verts = mesh.verts_packed().clone().requires_grad_(True)
    blend = BlendParams(sigma=1e-4, gamma=1e-4)
    raster = RasterizationSettings(image_size=(32, 32), blur_radius=2e-4 * 9.2, faces_per_pixel=10, bin_size=0)
    cameras = FoVPerspectiveCameras(T=torch.tensor([[0.0, 0.0, 3.0]]))
    renderer = MeshRenderer(MeshRasterizer(cameras=cameras, raster_settings=raster), SoftSilhouetteShader(blend))
    mesh = mesh.update_padded(verts[None])
    sil = renderer(mesh)[..., 3]
    assert sil.shape == (1, 32, 32) and 0 < sil.mean() < 1
    (sil.mean()).backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
