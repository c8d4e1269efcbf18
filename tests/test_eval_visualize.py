"""The ranked-results picture shows each query's top-k, green where right, red where wrong, junk left out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from reid3dsl.errors import UserError
from reid3dsl.eval import visualize
from reid3dsl.eval.visualize import ranked_results_png

CELL = (32, 16)


def flat(colour: tuple[int, int, int], h: int = 40, w: int = 20) -> np.ndarray:
    return np.full((h, w, 3), colour, dtype=np.uint8)


def border_colours(png, rows: int, topk: int) -> list[list[tuple[int, int, int]]]:
    """The colour of each result cell's top-left border pixel, per query row (RGB)."""
    img = cv2.imread(str(png))[..., ::-1]
    pad, gap = visualize.PAD, visualize.GAP
    h, w = CELL
    out = []
    for i in range(rows):
        y = pad + i * (h + 3 * pad)
        row = []
        for r in range(topk):
            x = pad + (w + 3 * pad) * (r + 1) + gap
            row.append(tuple(int(c) for c in img[y, x]))
        out.append(row)
    return out


def problem():
    # Gallery: g0 is pid 1 in the query's own camera (junk: never shown), g1 and g3 are pid 1 elsewhere.
    g_pids = np.array([1, 1, 2, 1, 3])
    g_cams = np.array([0, 1, 1, 2, 1])
    gallery = [flat((10 * j, 100, 200)) for j in range(5)]
    distmat = np.array([[0.0, 0.3, 0.1, 0.2, 0.4], [0.5, 0.4, 0.0, 0.2, 0.1]])
    return [flat((255, 255, 0)), flat((0, 255, 255), 64, 30)], gallery, distmat, np.array([1, 2]), g_pids, g_cams


def test_borders_are_green_for_the_right_identity_and_red_for_a_wrong_one_and_junk_is_skipped(tmp_path) -> None:
    queries, gallery, distmat, q_pids, g_pids, g_cams = problem()
    png = ranked_results_png(queries, gallery, distmat, q_pids, g_pids, [0, 0], g_cams, tmp_path / "r.png",
                             topk=4, cell=CELL)
    g, r = visualize.CORRECT, visualize.WRONG
    # query 0 (pid 1, cam 0): g0 is junk; order g2 g3 g1 g4 -> wrong, right, right, wrong
    # query 1 (pid 2, cam 0): order g2 g4 g3 g1 -> right, wrong, wrong, wrong
    assert border_colours(png, 2, 4) == [[r, g, g, r], [g, r, r, r]]
    # The shown images are the gallery's own pixels, in ranked order (query 0's first result is g2).
    img = cv2.imread(str(png))[..., ::-1]
    pad, gap = visualize.PAD, visualize.GAP
    y, x = pad + pad + CELL[0] // 2, pad + (CELL[1] + 3 * pad) + gap + pad + CELL[1] // 2
    assert tuple(int(c) for c in img[y, x]) == (20, 100, 200)


def test_an_integer_ranking_draws_the_same_picture_as_the_distances(tmp_path) -> None:
    queries, gallery, distmat, q_pids, g_pids, g_cams = problem()
    common = (q_pids, g_pids, [0, 0], g_cams)
    a = ranked_results_png(queries, gallery, distmat, *common, tmp_path / "a.png", topk=4, cell=CELL)
    ranking = np.argsort(distmat, axis=1, kind="stable")
    b = ranked_results_png(queries, gallery, ranking, *common, tmp_path / "b.png", topk=4, cell=CELL)
    np.testing.assert_array_equal(cv2.imread(str(a)), cv2.imread(str(b)))


def test_clothes_changing_mode_skips_same_clothes_matches(tmp_path) -> None:
    queries, gallery, distmat, q_pids, g_pids, g_cams = problem()
    clothes = (["a", "b"], ["a", "a", "c", "b", "d"])  # g1 wears the query's clothes: junk under cc
    png = ranked_results_png(queries[:1], gallery, distmat[:1], q_pids[:1], g_pids, [0], g_cams,
                             tmp_path / "cc.png", topk=3, q_clothes=clothes[0][:1], g_clothes=clothes[1],
                             mode="cc", cell=CELL)
    g, r = visualize.CORRECT, visualize.WRONG
    assert border_colours(png, 1, 3) == [[r, g, r]]  # g2, g3, g4


@pytest.mark.parametrize(
    ("change", "name"),
    [("path", ".png"), ("image", "gallery_images"), ("ranking", "ranking")],
)
def test_bad_input_is_rejected_naming_it(tmp_path, change, name) -> None:
    queries, gallery, distmat, q_pids, g_pids, g_cams = problem()
    out = tmp_path / ("r.jpg" if change == "path" else "r.png")
    if change == "image":
        gallery[2] = gallery[2].astype(np.float32)
    if change == "ranking":
        distmat = distmat[:1]
    with pytest.raises(UserError, match=name):
        ranked_results_png(queries, gallery, distmat, q_pids, g_pids, [0, 0], g_cams, out, cell=CELL)


def test_reconstruction_picture_has_a_row_per_image_with_mask_render_and_mesh_tiles(tmp_path) -> None:
    import torch

    from reid3dsl.body.draw import reconstruction_grid

    b, h, w = 3, 32, 16
    images = torch.full((b, 3, h, w), 0.5)
    masks = torch.zeros(b, 16, 8)
    masks[:, 4:12, 2:6] = 1.0
    sil = torch.zeros(b, 16, 8)
    sil[:, :8] = 1.0
    verts = torch.tensor([[2.0, 2.0], [14.0, 2.0], [8.0, 30.0]]).expand(b, 3, 2)
    faces = torch.tensor([[0, 1, 2]])
    kp = torch.cat([torch.rand(b, 17, 2) * torch.tensor([w, h]), torch.ones(b, 17, 1)], dim=2)
    png = reconstruction_grid(images, masks, sil, verts, faces, kp[..., :2], kp, torch.tensor([0.1, 0.5, 0.9]),
                              tmp_path / "r.png", scale=4)
    img = cv2.imread(str(png))[..., ::-1]
    gap, th, tw = 4, h * 4, w * 4
    assert img.shape == (b * (th + gap) + gap, 4 * (tw + gap) + gap, 3)
    tile = [img[gap : gap + th, gap + c * (tw + gap) : gap + c * (tw + gap) + tw] for c in range(4)]
    assert (tile[1][24, 16] == 0).all() and (tile[1][64, 32] == 255).all()  # the mask, in black and white
    assert (tile[2][16, 32] == 255).all() and (tile[2][100, 32] == 0).all()  # the silhouette's top half
    assert (tile[3] != tile[0]).any(axis=2).sum() > 50  # the wireframe drawn over the image
