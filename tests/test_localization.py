"""Paper-rule localization: hand-computed boxes, flat/NaN/tiny maps, scaling to original pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camloc.errors import CamlocValueError
from camloc.localization import component_boxes, largest_component_box, localize, scale_boxes, threshold_maps


def _maps(a) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)[None, None]


# 4x5 map: a strong blob on the left (3 px at >= 0.2 of max), a weaker 2-px blob on the right.
HAND = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 10.0, 0.0, 0.0, 3.0],
    [0.0, 4.0, 5.0, 0.0, 2.5],
    [0.0, 0.0, 0.0, 0.0, 0.0],
]


def test_hand_map_paper_rule_each_threshold():
    m = _maps(HAND)
    # t = 0.2 -> keep >= 2: left blob {(1,1),(2,1),(2,2)} (3 px) and right {(1,4),(2,4)} (2 px): largest is left
    assert localize(m, threshold=0.2).boxes[0, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    # t = 0.45 -> keep >= 4.5: (1,1) and (2,2) are diagonal neighbours: one 8-connected component
    assert localize(m, threshold=0.45).boxes[0, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    # ... but two 4-connected components of one pixel each: the first in raster order wins the tie
    assert localize(m, threshold=0.45, connectivity=4).boxes[0, 0].tolist() == [1.0, 1.0, 2.0, 2.0]
    # t = 0.9 -> only the peak
    assert localize(m, threshold=0.9).boxes[0, 0].tolist() == [1.0, 1.0, 2.0, 2.0]
    # t = 0 -> every pixel of a map with positive evidence: the whole map
    assert localize(m, threshold=0.0).boxes[0, 0].tolist() == [0.0, 0.0, 5.0, 4.0]


def test_all_components_mode_lists_every_box_largest_first():
    loc = localize(_maps(HAND), threshold=0.2, mode="all")
    boxes = loc.all_boxes[0][0].tolist()
    assert boxes == [[1.0, 1.0, 3.0, 3.0], [4.0, 1.0, 5.0, 3.0]]
    b, a = component_boxes(threshold_maps(_maps(HAND), 0.2)[0, 0])
    assert a.tolist() == [3, 2] and b.tolist() == boxes


def test_border_touching_component_reaches_the_edge():
    m = np.zeros((6, 7), np.float32)
    m[3:, 5:] = 1.0
    assert localize(_maps(m)).boxes[0, 0].tolist() == [5.0, 3.0, 7.0, 6.0]


def test_flat_negative_nan_and_tiny_maps():
    assert localize(_maps(np.full((3, 3), 2.0))).boxes[0, 0].tolist() == [0, 0, 3, 3]
    assert localize(_maps(np.full((3, 3), -1.0))).boxes[0, 0].tolist() == [0, 0, 0, 0]
    assert localize(_maps(np.zeros((3, 3)))).boxes[0, 0].tolist() == [0, 0, 0, 0]
    # minmax normalisation of a flat map gives zeros: nothing at t > 0
    assert localize(_maps(np.full((3, 3), 2.0)), normalize="minmax").boxes[0, 0].tolist() == [0, 0, 0, 0]
    with pytest.raises(CamlocValueError, match="`maps`"):
        localize(_maps([[float("nan"), 1.0]]))
    one = localize(_maps([[5.0]]), size=(10, 20))
    assert one.boxes[0, 0].tolist() == [0, 0, 20, 10]
    assert one.working_size == (10, 20)


def test_boxes_scale_to_original_pixels():
    m = np.zeros((4, 4), np.float32)
    m[1:3, 2:4] = 1.0  # columns 2..3, rows 1..2 -> (2, 1, 4, 3) in the 4x4 frame
    loc = localize(_maps(m), image_sizes=[(400, 200)])
    assert loc.boxes[0, 0].tolist() == [200.0, 50.0, 400.0, 150.0]
    # upsampling first (bilinear) keeps the box inside the same region of the image
    up = localize(_maps(m), size=(64, 64), image_sizes=(400, 200), threshold=0.5)
    x0, y0, x1, y1 = up.boxes[0, 0].tolist()
    assert 180 <= x0 <= 220 and x1 == 400 and 40 <= y0 <= 60 and 140 <= y1 <= 160
    assert scale_boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), (10, 10), (20, 5)).tolist() == [[2.0, 1.0, 6.0, 2.0]]


def test_batch_and_masks_agree_with_single_calls():
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(3, 2, 7, 9, generator=g)
    loc = localize(maps, return_masks=True)
    assert loc.boxes.shape == (3, 2, 4) and loc.masks.shape == (3, 2, 7, 9)
    for i in range(3):
        for j in range(2):
            ref = largest_component_box(threshold_maps(maps[i, j], 0.2))
            assert loc.boxes[i, j].tolist() == ref.tolist()


def test_bad_options():
    with pytest.raises(CamlocValueError, match="`threshold`"):
        localize(torch.zeros(1, 1, 2, 2), threshold=1.5)
    with pytest.raises(CamlocValueError, match="`connectivity`"):
        localize(torch.zeros(1, 1, 2, 2), connectivity=6)
    with pytest.raises(CamlocValueError, match="`image_sizes`"):
        localize(torch.zeros(2, 1, 2, 2), image_sizes=[(1, 1)])


def test_fast_largest_box_equals_labelling_on_random_masks():
    from camloc.localization import _components

    rng = np.random.default_rng(0)
    masks = [rng.random((40, 50)) > p for p in (0.3, 0.5, 0.7, 0.9, 0.97)]
    ring = np.zeros((20, 20), bool)
    ring[2:18, 2:18] = True
    ring[5:15, 5:15] = False
    ring[8:11, 8:11] = True  # a component inside the hole of another
    masks += [ring, np.ones((7, 9), bool), np.zeros((7, 9), bool)]
    for mask in masks:
        boxes, areas = _components(mask, 8)
        ref = boxes[int(np.argmax(areas))] if len(areas) else np.zeros(4, np.float32)
        assert largest_component_box(mask).tolist() == ref.tolist()
    assert largest_component_box(ring).tolist() == [2.0, 2.0, 18.0, 18.0]
