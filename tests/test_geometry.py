"""Coordinate mapping between stored image, model space and crops (anisotropic, non-RAS)."""

import numpy as np
import torch

from lib.prompts.geometry import (
    Crop,
    apply_affine,
    mask_to_crop_logits,
    original_to_volume,
    place_crop,
    resample_logits_to_original,
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


def test_crop_logits_return_to_the_clicked_voxels(tmp_path):
    volume = load_model_volume(str(blob_image(tmp_path)), spacing=1.5)
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    mapped = apply_affine(orig_to_vol, CLICK[None])[0]
    crop = place_crop(mapped, tuple(volume.image.shape[1:]), size=32)
    # a positive blob of logits around the click, at a quarter of the crop resolution like the mask decoder's output
    low_res = torch.full((1, 1, 8, 8, 8), -10.0)
    centre = (apply_affine(crop.volume_to_crop, mapped[None])[0] + 0.5) / 4 - 0.5
    c = np.round(centre).astype(int)
    low_res[0, 0, c[0], c[1], c[2]] = 10.0
    out = torch.full(volume.original_shape, -20.0)
    resample_logits_to_original(low_res, crop, orig_to_vol, volume.original_shape, out)
    mask = (out > 0).numpy()
    assert mask.any()
    assert np.abs(np.argwhere(mask).mean(axis=0) - CLICK).max() <= 3.0
    # and the inverse direction: the stored-grid mask becomes positive logits at the same low-res voxel
    logits = mask_to_crop_logits(torch.as_tensor(mask), crop, orig_to_vol, resolution=8)
    assert tuple(np.unravel_index(int(logits.argmax()), logits.shape[2:])) == tuple(c)


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
