"""Coordinate mapping between stored image, model space and crops (anisotropic, non-RAS)."""

import numpy as np
import pytest
import torch

from lib.prompts.geometry import (
    Crop,
    apply_affine,
    crop_cover,
    mask_to_crop_logits,
    original_to_volume,
    paste_crop_mask,
    place_crop,
    sample_crop,
)
from lib.transforms.preprocess import load_model_volume
from tests.conftest import lps_anisotropic_affine, write_nifti

SHAPE = (70, 60, 30)
CLICK = np.array([17, 41, 9])


def blob_image(tmp_path):
    array = np.full(SHAPE, 10.0, dtype=np.float32)
    i, j, k = CLICK
    array[i - 2 : i + 3, j - 2 : j + 3, k - 1 : k + 2] = 500.0
    return write_nifti(tmp_path / "blob.nii.gz", array, lps_anisotropic_affine())


def test_click_maps_onto_the_same_anatomy_in_model_space(tmp_path):
    volume = load_model_volume(str(blob_image(tmp_path)), spacing=1.5)
    assert np.allclose(np.diag(volume.affine)[:3], 1.5)  # RAS, isotropic model spacing
    mapped = apply_affine(original_to_volume(volume.original_affine, volume.affine), CLICK[None])[0]
    brightest = np.unravel_index(int(volume.image[0].argmax()), volume.image.shape[1:])
    assert np.abs(mapped - np.asarray(brightest)).max() <= 1.5


def test_crop_mask_returns_to_the_clicked_voxels(tmp_path):
    volume = load_model_volume(str(blob_image(tmp_path)), spacing=1.5)
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    mapped = apply_affine(orig_to_vol, CLICK[None])[0]
    crop = place_crop(mapped, tuple(volume.image.shape[1:]), size=32)
    centre = np.round(apply_affine(crop.volume_to_crop, mapped[None])[0]).astype(int)
    mask = torch.zeros((32, 32, 32), dtype=torch.bool)
    mask[centre[0] - 1 : centre[0] + 2, centre[1] - 1 : centre[1] + 2, centre[2] - 1 : centre[2] + 2] = True
    out = torch.zeros(volume.original_shape, dtype=torch.bool)
    paste_crop_mask(mask, crop, orig_to_vol, volume.original_shape, out)
    assert out.any()
    assert np.abs(np.argwhere(out.numpy()).mean(axis=0) - CLICK).max() <= 1.5
    # the inverse direction: the stored-grid mask becomes positive logits at the same low-res voxel
    logits = mask_to_crop_logits(out, crop, orig_to_vol, resolution=8)
    assert tuple(np.unravel_index(int(logits.argmax()), logits.shape[2:])) == tuple(centre // 4)


def rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


@pytest.mark.parametrize("degrees", [0.0, 17.0])  # orthogonal grids use index lookup, oblique ones grid_sample
@pytest.mark.parametrize("small", [False, True])  # a small object: only its bounding box is looked up
def test_paste_crop_mask_is_nearest_neighbour_of_every_voxel(degrees, small):
    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.random((16, 16, 16)) > 0.5)
    if small:
        mask[:5], mask[11:], mask[:, :7], mask[:, 12:], mask[..., 9:] = False, False, False, False, False
    crop = Crop(origin=(3.13, -2.21, 5.37), size=16, zoom=1.5)  # off the voxel grid: no rounding ties
    orig_to_vol = rotation_z(degrees) @ np.array([[0, 0, -0.8, 20], [1.2, 0, 0, -1], [0, 0.73, 0, 4], [0, 0, 0, 1.0]])
    shape = (40, 30, 35)
    # an earlier pass's mask everywhere, in the Fortran-ordered memory the result writers want
    out = torch.ones(shape[::-1], dtype=torch.bool).permute(2, 1, 0)
    paste_crop_mask(mask, crop, orig_to_vol, shape, out)
    voxels = np.argwhere(np.ones(shape, dtype=bool))
    in_crop = np.floor(apply_affine(crop.volume_to_crop @ orig_to_vol, voxels) + 0.5).astype(int)
    covered = np.all((in_crop >= 0) & (in_crop < 16), axis=1)
    expected = np.ones(shape, dtype=bool)
    hits = voxels[covered]
    expected[hits[:, 0], hits[:, 1], hits[:, 2]] = mask.numpy()[tuple(in_crop[covered].T)]
    mismatched = (out.numpy() != expected).sum()
    assert covered.sum() > 1000 and mismatched <= 0.001 * covered.sum()


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])  # masks, and the logits of to_original_logits
@pytest.mark.parametrize("fine_origin", [(9.13, 1.79, 7.37), (-6.87, -7.21, 20.37)])  # inside, and over two faces
def test_coarse_pass_skipping_the_fine_cover_pastes_the_same(dtype, fine_origin):
    rng = np.random.default_rng(1)
    coarse_mask, fine_mask = (torch.as_tensor(rng.random((16, 16, 16)) - 0.5).to(dtype) for _ in range(2))
    coarse = Crop(origin=(-4.87, -10.21, -3.63), size=16, zoom=2.5)
    fine = Crop(origin=fine_origin, size=16, zoom=1.0)
    orig_to_vol = np.array([[0, 0, -0.8, 20], [1.2, 0, 0, -1], [0, 0.73, 0, 4], [0, 0, 0, 1.0]])
    shape = (40, 30, 35)
    results = []
    for keep in (None, crop_cover(fine, orig_to_vol, shape)):
        out = torch.zeros(shape, dtype=dtype)
        paste_crop_mask(coarse_mask, coarse, orig_to_vol, shape, out, keep=keep)
        paste_crop_mask(fine_mask, fine, orig_to_vol, shape, out)
        results.append(out)
    cover = crop_cover(fine, orig_to_vol, shape)
    assert 0 < np.prod([c.stop - c.start for c in cover]) < np.prod(shape)
    assert torch.count_nonzero(results[0]) > 1000 and torch.equal(results[0], results[1])


def test_place_crop_stays_inside_and_centres_small_axes():
    crop = place_crop(np.array([5.0, 200.0, 50.0]), (300, 300, 60), size=128)
    low, high = crop.extent()
    assert low[0] == -0.5 and high[1] <= 300 - 0.5 + 1e-9  # clipped to the volume on both ends
    assert abs((low[2] + high[2]) / 2 - 29.5) < 0.51  # an axis shorter than the crop is centred
    coarse = place_crop(np.array([150.0, 150.0, 30.0]), (300, 300, 60), size=128, zoom=2.5)
    lo, hi = coarse.extent()
    assert np.all(lo <= -0.5) and np.all(hi >= np.array([299.5, 299.5, 59.5]))


def test_sample_crop_zoom_one_is_exact_and_pads_with_zero():
    volume = torch.arange(10 * 12 * 14, dtype=torch.float32).reshape(1, 10, 12, 14)
    crop = Crop(origin=(-2.0, 3.0, 4.0), size=8)
    out = sample_crop(volume, crop)
    assert torch.equal(out[0, 2:, :, :], volume[0, 0:6, 3:11, 4:12])
    assert torch.all(out[0, :2] == 0)
    zoomed = sample_crop(volume, Crop(origin=(2.0, 3.0, 4.0), size=4, zoom=1.0))
    assert torch.equal(zoomed, volume[:, 2:6, 3:7, 4:8])


@pytest.mark.parametrize("zoom", [1.0 / 3.0, 0.5, 1.0, 2.0, 3.0])  # auto-zoom's range and the coarse passes
def test_clicks_round_trip_through_crops_at_every_zoom(tmp_path, zoom):
    volume = load_model_volume(str(blob_image(tmp_path)), spacing=1.5)
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    mapped = apply_affine(orig_to_vol, CLICK[None])[0]
    crop = place_crop(mapped, tuple(volume.image.shape[1:]), size=32, zoom=zoom)
    in_crop = apply_affine(crop.volume_to_crop, mapped[None])[0]
    back = apply_affine(np.linalg.inv(orig_to_vol) @ crop.crop_to_volume, in_crop[None])[0]
    assert np.allclose(back, CLICK, atol=1e-6)
    image = sample_crop(volume.image, crop)[0]
    brightest = np.unravel_index(int(image.argmax()), image.shape)
    assert np.abs(np.asarray(brightest) - in_crop).max() <= 1.5 / min(zoom, 1.0)  # the blob is where the click is
