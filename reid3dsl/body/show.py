"""A contact sheet of the body model: several builds in several poses, each as a shaded picture and as the
soft silhouette the training loss sees, with the projected COCO-17 keypoints drawn over both.

`python -m reid3dsl.body.show --out body.png [--config configs/demo.yaml] [--set body.key=value]`
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from reid3dsl.body.constants import COCO17_SKELETON, JOINT
from reid3dsl.config import add_config_args, config_from_args
from reid3dsl.errors import UserError, cli_main
from reid3dsl.log import setup_logging

# Shapes shown (rows): the mean body and +-2 standard deviations along the first principal components.
SHAPES = (("mean body", {}), ("beta0 +2", {0: 2.0}), ("beta0 -2", {0: -2.0}), ("beta1 +2", {1: 2.0}),
          ("beta1 -2", {1: -2.0}), ("beta2 +2", {2: 2.0}), ("beta2 -2", {2: -2.0}))
# Poses shown (columns): (title, walking phase or None for standing, heading in degrees).
POSES = (("standing, front", None, 0.0), ("walking, 3/4 view", 0.5 * math.pi, 35.0),
         ("walking, side", 1.5 * math.pi, 90.0), ("standing, back", None, 180.0))
# Clothing colours by the joint a vertex is mostly skinned to: skin, shirt, trousers, shoes.
_SKIN, _SHIRT, _TROUSERS, _SHOES = (0.87, 0.70, 0.58), (0.25, 0.45, 0.75), (0.25, 0.25, 0.30), (0.12, 0.1, 0.08)
_JOINT_COLOURS = {
    **{j: _SKIN for j in ("neck", "head", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                          "left_hand", "right_hand")},
    **{j: _SHIRT for j in ("spine1", "spine2", "spine3", "left_collar", "right_collar", "left_shoulder",
                           "right_shoulder")},
    **{j: _TROUSERS for j in ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee")},
    **{j: _SHOES for j in ("left_ankle", "right_ankle", "left_foot", "right_foot")},
}


def _pose(phase: float | None, heading_deg: float) -> torch.Tensor:
    """Rotation matrices (1, 24, 3, 3) of a clean standing or walking pose."""
    from pytorch3d.transforms import euler_angles_to_matrix

    from reid3dsl.body.prior import upright_orientation

    e = torch.zeros(1, 24, 3)
    e[0, JOINT["left_shoulder"], 2], e[0, JOINT["right_shoulder"], 2] = -72.0, 72.0
    e[0, JOINT["left_elbow"], 1], e[0, JOINT["right_elbow"], 1] = -12.0, 12.0
    if phase is not None:
        s, c = math.sin(phase), math.cos(phase)
        e[0, JOINT["left_hip"], 0], e[0, JOINT["right_hip"], 0] = -28 * s, 28 * s
        e[0, JOINT["left_knee"], 0] = 45 * max(c, 0.0) ** 1.5 + 5
        e[0, JOINT["right_knee"], 0] = 45 * max(-c, 0.0) ** 1.5 + 5
        e[0, JOINT["left_shoulder"], 0], e[0, JOINT["right_shoulder"], 0] = 22 * s, -22 * s
        e[0, JOINT["left_elbow"], 1], e[0, JOINT["right_elbow"], 1] = -25.0, 25.0
    rot = euler_angles_to_matrix(torch.deg2rad(e), "XYZ")
    rot[:, 0] = upright_orientation(torch.tensor([math.radians(heading_deg)]))
    return rot


def _draw_keypoints(ax, kp: np.ndarray) -> None:
    """COCO-17 skeleton of keypoints (17, 2) in pixels."""
    for a, b in COCO17_SKELETON:
        ax.plot(kp[[a, b], 0], kp[[a, b], 1], color="yellow", linewidth=1.0)
    ax.scatter(kp[:, 0], kp[:, 1], s=6, c="red", zorder=3)


def _frame(ax, height: int, width: int) -> None:
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, out: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise UserError(f"picture '{out}': cannot write it ({exc.strerror})") from None
    finally:
        plt.close(fig)
    return out


def contact_sheet(cfg, out: Path, size: tuple[int, int] = (256, 128)) -> Path:
    """Render the sheet for `cfg.body` into the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reid3dsl.body.camera import project_points, weak_perspective_to_translation
    from reid3dsl.body.render import SilhouetteRenderer, TexturedRenderer
    from reid3dsl.body.smpld import load_body_model

    body = load_body_model(cfg.body)
    soft, shaded = SilhouetteRenderer(cfg.body), TexturedRenderer(cfg.body)
    owner = body.smpl.lbs_weights.argmax(dim=1)
    names = {i: n for n, i in JOINT.items()}
    colours = torch.tensor([_JOINT_COLOURS[names[int(j)]] for j in owner])[None]
    sil_size = (size[0] // 2, size[1] // 2)
    cam_t = weak_perspective_to_translation(torch.tensor([[0.85, 0.0, 0.0]]), soft.focal)  # room for tall builds
    fig, axes = plt.subplots(len(SHAPES), 2 * len(POSES), figsize=(2 * len(POSES) * 1.3, len(SHAPES) * 2.5))
    for row, (shape_name, coeffs) in enumerate(SHAPES):
        betas = torch.zeros(1, body.num_betas)
        for i, v in coeffs.items():
            if i < body.num_betas:
                betas[0, i] = v
        for col, (pose_name, phase, heading) in enumerate(POSES):
            out_body = body(betas, _pose(phase, heading))
            img = shaded.render(out_body.vertices, body.faces, colours, cam_t, size, keypoints=out_body.keypoints,
                                background=(1.0, 1.0, 1.0))
            sil = soft.render(out_body.vertices, body.faces, cam_t, sil_size)
            kp_sil = project_points(out_body.keypoints, cam_t, sil_size, soft.focal)
            ax_rgb, ax_sil = axes[row, 2 * col], axes[row, 2 * col + 1]
            ax_rgb.imshow(img.rgb[0].numpy(), extent=(0, size[1], size[0], 0))
            _draw_keypoints(ax_rgb, img.keypoints[0, :, :2].numpy())
            ax_sil.imshow(sil[0].detach().numpy(), cmap="gray", vmin=0, vmax=1, extent=(0, sil_size[1], sil_size[0], 0))
            _draw_keypoints(ax_sil, kp_sil[0].detach().numpy())
            _frame(ax_rgb, *size)
            _frame(ax_sil, *sil_size)
            if row == 0:
                ax_rgb.set_title(pose_name, fontsize=7)
                ax_sil.set_title(f"silhouette {sil_size[0]}x{sil_size[1]}", fontsize=7)
            if col == 0:
                ax_rgb.set_ylabel(shape_name, fontsize=8)
    fig.suptitle("Body model: builds (rows) x poses (columns), shaded and as soft silhouettes, COCO-17 keypoints",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reid3dsl.body.show", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("body.png"), help="PNG to write")
    add_config_args(parser)
    args = parser.parse_args(argv)
    setup_logging()
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out '{args.out}': expected a .png file")
    print(contact_sheet(config_from_args(args), args.out))


if __name__ == "__main__":
    main()
