"""Box, lasso and scribble prompts: parsing, the clicks and priors derived from them, and what they impose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.errors import InvalidRequest
from lib.prompts.box import box_prompt, parse_box, request_box
from lib.prompts.gestures import lasso_around
from lib.prompts.lasso import lasso_prompt, parse_lasso, reach_box
from lib.prompts.regions import RegionPrompt, apply_regions, rounded_extrusion
from lib.prompts.scribbles import (
    POINTS_PER_STROKE,
    Scribbles,
    continues,
    parse_label_info,
    read_scribbles,
    scribble_prompt,
    stroke_points,
)
from lib.prompts.simulation import next_scribble

SHAPE = (40, 50, 30)


def test_slicers_flat_roi_and_the_nested_box_are_the_same_box():
    nested = parse_box([[5, 20], [10, 30], [4, 12]], SHAPE)
    flat = parse_box("[20, 5, 10, 30, 12, 4]", SHAPE, "roi")  # Slicer's IJK bounds may come reversed per axis
    assert np.array_equal(nested, flat) and nested.tolist() == [[5, 20], [10, 30], [4, 12]]
    assert parse_box([-5, 100, 0, 10, 0, 10], SHAPE).tolist() == [[0, 39], [0, 10], [0, 10]]  # clipped
    assert parse_box([], SHAPE) is None and request_box({"roi": ""}, SHAPE) is None


@pytest.mark.parametrize(("value", "message"), [
    ([1, 2, 3], "must be"),
    ([[1, 2], [3, 4], [5, "x"]], "must be"),
    ([[1, 2], [3, 4], [5, float("nan")]], "must be"),
    ("[1, 2", "must be"),
    ([100, 120, 0, 5, 0, 5], "does not overlap"),
])
def test_malformed_boxes_are_refused(value, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_box(value, SHAPE)


def test_a_request_gives_a_box_or_an_roi_not_both():
    with pytest.raises(InvalidRequest, match="not both"):
        request_box({"box": [0, 5, 0, 5, 0, 5], "roi": [0, 5, 0, 5, 0, 5]}, SHAPE)


def test_a_box_gives_its_centre_click_an_inscribed_prior_and_bounds():
    box = parse_box([[10, 20], [10, 30], [5, 15]], SHAPE)
    region = box_prompt(box, SHAPE)
    assert region.foreground.tolist() == [[15, 20, 10]] and len(region.background) == 0
    assert region.prior[15, 20, 10] and not region.prior[10, 10, 5]  # the centre, not the corner
    assert region.prior[10, 20, 10] and region.prior[20, 20, 10]  # touches each face
    assert not (region.prior & region.exclude).any()
    assert region.exclude.sum() == np.prod(SHAPE) - 11 * 21 * 11


def test_a_lasso_on_one_slice_fills_its_polygon():
    lasso = parse_lasso([[10, 10, 7], [30, 10, 7], [30, 40, 7], [10, 40, 7]], SHAPE)
    assert lasso.axis == 2 and lasso.index == 7 and lasso.area.shape == (40, 50)
    assert lasso.area[20, 25] and not lasso.area[5, 5]
    region = lasso_prompt(lasso, SHAPE)
    assert all(lasso.area[int(i), int(j)] and k == 7 for i, j, k in region.foreground)
    assert len(region.background) == 4 and all(not lasso.area[int(i), int(j)] and k == 7
                                                for i, j, k in region.background)
    assert region.prior[20, 25, 7] and region.prior[20, 25, 12] and not region.prior[20, 25, 29]
    assert region.exclude[5, 5, 7] and not region.exclude[20, 25, 7]  # outside the lasso on its slice
    assert not region.exclude[20, 25, 12] and region.exclude[20, 25, 29]  # its reach along the slice axis
    assert reach_box(lasso, SHAPE).tolist() == [[0, 39], [0, 49], [0, 23]]  # 31 wide: 16 voxels of reach


@pytest.mark.parametrize(("value", "message"), [
    ([[1, 1, 1], [5, 1, 1]], "at least 3"),
    ([[1, 1, 1], [5, 2, 1], [3, 8, 2]], "one slice"),
    ([[1, 1, 1], [5, 1, 1], [9, 1, 1]], "enclose no area"),
    ([[1, 1, 1], [5, 1, 1], [3, 99, 1]], "outside the image"),
    ([[1, 1]], "voxel indices"),
])
def test_malformed_lassos_are_refused(value, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_lasso(value, SHAPE)


def test_rounded_extrusion_grows_a_disc_into_a_ball():
    yy, xx = np.mgrid[:41, :41]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    body = rounded_extrusion(disc, axis=0, index=20, shape=(41, 41, 41))
    zz, yy, xx = np.mgrid[:41, :41, :41]
    ball = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    assert (body & ball).sum() / (body | ball).sum() > 0.8  # 0.87 measured: voxel rounding


def scribble_volume() -> np.ndarray:
    labelmap = np.zeros(SHAPE, dtype=np.uint8)
    labelmap[10:20, 10:20, 10:20] = 1  # the selected label's current mask
    labelmap[25, 10:30, 12] = 3  # a foreground stroke beyond it
    labelmap[15, 10:20, 15] = 2  # a background stroke across it
    return labelmap


def test_slicers_scribbles_become_spread_clicks_a_prior_and_strokes_that_hold():
    info = parse_label_info('[{"name": "tumour", "id": 1}, {"name": "background_scribbles", "id": 2}, '
                            '{"name": "foreground_scribbles", "id": 3}]')
    scribbles = read_scribbles(scribble_volume(), info, "tumour", {"a": 1})
    region = scribble_prompt(scribbles)
    foreground = stroke_points(scribbles.foreground, np.zeros((0, 3)))
    background = stroke_points(scribbles.background, np.zeros((0, 3)))
    assert len(foreground) == POINTS_PER_STROKE and all(p[0] == 25 and p[2] == 12 for p in foreground)
    assert len(background) == POINTS_PER_STROKE and all(p[0] == 15 and p[2] == 15 for p in background)
    assert {p[1] for p in foreground} >= {10, 29}  # spread to the stroke's ends
    assert region.prior[12, 12, 12] and region.prior[25, 20, 12] and not region.prior[15, 12, 15]
    mask = apply_regions(torch.zeros(SHAPE, dtype=torch.uint8), [region])
    assert mask.sum() == 20 and mask[25, 10:30, 12].all()
    full = apply_regions(torch.ones(SHAPE, dtype=torch.uint8), [region])
    assert not full[15, 10:20, 15].any()


def test_a_new_round_keeps_the_clicks_sent_and_adds_the_new_strokes_after_them():
    strokes = np.zeros(SHAPE, dtype=bool)
    strokes[25, 10:30, 12] = True
    first = stroke_points(strokes, np.zeros((0, 3)))
    strokes[5, 5:9, 20] = True  # a second stroke, apart from the first
    second = stroke_points(strokes, first)
    assert np.array_equal(second[:len(first)], first) and len(second) == len(first) + 4  # its 4 voxels
    assert all(p[0] == 5 for p in second[len(first):])
    strokes[25, 10:30, 12] = False  # the first stroke erased: every click is made afresh
    assert np.array_equal(stroke_points(strokes, second), stroke_points(strokes, np.zeros((0, 3))))


def test_a_round_continues_the_session_only_from_the_label_it_returned():
    returned = np.zeros(SHAPE, dtype=bool)
    returned[10:20, 10:20, 10:20] = True
    foreground = np.zeros(SHAPE, dtype=bool)
    foreground[15, 5:25, 15] = True  # a new stroke across the label's edge, exported over it
    exported = returned & ~foreground
    background = np.zeros(SHAPE, dtype=bool)
    assert continues(Scribbles(foreground, background, exported), returned)
    edited = exported.copy()
    edited[11, 11, 11] = False  # the annotator erased a voxel of the label away from the strokes
    assert not continues(Scribbles(foreground, background, edited), returned)
    assert not continues(Scribbles(foreground, background, None), returned)
    assert not continues(Scribbles(foreground, background, exported), None)


def test_without_label_info_the_scribble_indices_follow_monai_labels_convention():
    scribbles = read_scribbles(scribble_volume(), {}, None, {"a": 1})  # background len + 1, foreground len + 2
    assert scribbles.background.sum() == 10 and scribbles.foreground.sum() == 20 and scribbles.current is None


@pytest.mark.parametrize(("labelmap", "info", "message"), [
    (np.zeros(SHAPE, dtype=np.uint8), {}, "No scribbles"),
    (np.where(scribble_volume() == 3, 0, scribble_volume()), {"background_scribbles": 2}, "Nothing to refine"),
])
def test_scribbles_that_ask_nothing_are_refused(labelmap, info, message):
    with pytest.raises(InvalidRequest, match=message):
        read_scribbles(labelmap, info, "tumour", {"a": 1})


@pytest.mark.parametrize("value", ['[{"name": "x"}]', "{}", "[1]", '[{"name": "x", "id": true}]', "[{"])
def test_malformed_label_info_is_refused(value):
    with pytest.raises(InvalidRequest, match="label_info"):
        parse_label_info(value)


def test_the_simulated_scribble_follows_the_largest_error_on_its_slice():
    target = np.zeros(SHAPE, dtype=bool)
    target[5:35, 10:40, 5:25] = True
    prediction = np.zeros(SHAPE, dtype=bool)
    prediction[5:35, 10:40, 5:15] = True  # the upper half of the object is missing
    stroke, is_foreground = next_scribble(prediction, target)
    assert is_foreground and stroke.sum() > 5 and (stroke & target & ~prediction).sum() == stroke.sum()
    assert len(np.unique(np.nonzero(stroke)[2])) == 1  # painted on one axial slice
    assert next_scribble(target, target) is None


def test_regions_apply_in_order():
    include = np.zeros(SHAPE, dtype=bool)
    include[0, 0, 0] = True
    exclude = np.ones(SHAPE, dtype=bool)
    regions = [RegionPrompt("a", np.zeros((0, 3)), np.zeros((0, 3)), exclude=exclude),
               RegionPrompt("b", np.zeros((0, 3)), np.zeros((0, 3)), include=include)]
    assert apply_regions(torch.ones(SHAPE, dtype=torch.uint8), regions).sum() == 1


def test_the_simulated_lasso_outlines_the_object_on_its_slice():
    target = np.zeros(SHAPE, dtype=bool)
    target[10:30, 15:35, 8:20] = True
    target[35:38, 40:45, 12] = True  # another region on the same slice, not the clicked one
    lasso = lasso_around(target, np.array([20, 25, 12]))
    assert all(k == 12 for _, _, k in lasso) and len(lasso) <= 41
    area = parse_lasso(lasso, SHAPE).area
    assert area[10:30, 15:35].all() and area.sum() < 1.15 * 400  # around the clicked region, tightly
    assert not area[35:38, 40:45].any()


def test_a_local_correction_changes_only_the_region_each_click_points_at():
    from lib.prompts.local_edit import local_correction

    base = np.zeros((40, 40, 40), dtype=bool)
    base[5:35, 5:35, 5:35] = True
    base[10:16, 10:16, 10:16] = False  # a hole the label misses
    answer = np.zeros_like(base)
    answer[8:18, 8:18, 8:18] = True  # the model's coarse answer: fills the hole, drops the rest of the label
    answer[30:38, 30:38, 30:38] = True  # and adds something far away
    fixed = local_correction(base, answer, np.array([[12, 12, 12]]), np.zeros((0, 3)), np.ones(3), 10.0)
    expected = base.copy()
    expected[10:16, 10:16, 10:16] = True
    assert np.array_equal(fixed, expected)
    # a background click removes the connected part the answer leaves out, and only within the radius
    slab = base.copy()
    slab[10:30, 10:30, 18:22] = False
    carved = local_correction(base, slab, np.zeros((0, 3)), np.array([[12, 12, 20]]), np.ones(3), 3.0)
    assert not carved[12, 12, 20] and carved[25, 25, 20]
    assert (base & ~carved).sum() == 6 * 6 * 4  # the slab inside the 7-voxel window around the click
    # a click where the answer agrees with the label changes nothing
    assert np.array_equal(local_correction(base, answer, np.array([[20, 20, 20]]), np.zeros((0, 3)),
                                           np.ones(3), 10.0), base)


def test_a_click_on_a_thin_error_at_the_labels_edge_changes_only_what_is_near_it():
    """The campaign's ventricles: a background click on a 2-voxel rim the label has too much, where the model's
    answer also misses the object itself, must not carve the object out to the window's edge (it took the
    ventricles from 0.88 to 0.68 in one click)."""
    from lib.prompts.local_edit import local_correction

    truth = np.zeros((40, 40, 40), dtype=bool)
    truth[10:30, 10:30, 10:30] = True
    base = truth.copy()
    base[10:30, 10:30, 30:32] = True  # a thin rim of wrong voxels on one face
    answer = np.zeros_like(base)  # the model's answer misses everything here
    corrected = local_correction(base, answer, np.zeros((0, 3)), np.array([[20, 20, 30]]), np.ones(3), 15.0)
    assert not corrected[20, 20, 30] and not corrected[20, 20, 31]  # the rim around the click goes
    # the object stays but for the voxels within 4 mm of the click: twice its 2 mm from the label's edge (with the
    # 15 mm window alone, three quarters of the object went)
    assert corrected[truth].mean() > 0.95
