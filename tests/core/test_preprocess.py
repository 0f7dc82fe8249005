"""The weight-free control preprocessors: canny edges of a drawn shape lie on its outline, one pixel thin."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from limner.core.preprocess import canny, preprocess

BOX = (32, 40, 96, 88)


def drawn() -> Image.Image:
    image = Image.new("RGB", (128, 128), (20, 30, 40))
    ImageDraw.Draw(image).rectangle(BOX, fill=(240, 220, 200))
    return image


def test_canny_traces_the_outline_of_a_drawn_shape() -> None:
    edges = canny(drawn())
    assert edges.size == (128, 128) and edges.mode == "RGB"
    on = np.asarray(edges)[..., 0] > 0
    assert set(np.unique(np.asarray(edges))) == {0, 255}, "white edges on black"
    left, top, right, bottom = BOX
    ys, xs = np.nonzero(on)
    near_outline = (
        (np.abs(xs - left) <= 1)
        | (np.abs(xs - right - 1) <= 1)
        | (np.abs(ys - top) <= 1)
        | (np.abs(ys - bottom - 1) <= 1)
    )
    assert near_outline.all(), "every edge pixel lies on the outline"
    inside = on[top + 3 : bottom - 2, left + 3 : right - 2]
    assert not inside.any() and not on[: top - 2].any() and not on[bottom + 3 :].any()
    for row in range(top + 4, bottom - 3):  # both sides, every row, one pixel thin
        assert on[row, left - 1 : left + 2].sum() == 1 and on[row, right : right + 3].sum() == 1
    for column in range(left + 4, right - 3):
        assert on[top - 1 : top + 2, column].sum() == 1 and on[bottom : bottom + 3, column].sum() == 1


def test_faint_shapes_have_no_edges_and_none_passes_the_map_through() -> None:
    faint = Image.new("RGB", (64, 64), (100, 100, 100))
    ImageDraw.Draw(faint).ellipse((10, 10, 50, 50), fill=(110, 110, 110))  # below the thresholds
    assert not np.asarray(canny(faint)).any()
    ready = drawn().convert("L")
    assert preprocess(ready, "none").mode == "RGB"
    np.testing.assert_array_equal(np.asarray(preprocess(ready, "none"))[..., 0], np.asarray(ready))
    with pytest.raises(ValueError, match="unknown preprocessor 'depth'"):
        preprocess(ready, "depth")
