"""The head's class probabilities on the stored grid: trilinear where the grid is orthogonal, its arg-max in slabs."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from lib.prompts.geometry import apply_affine, original_to_volume
from lib.segmentation import resample
from lib.transforms.preprocess import load_model_volume

SPACING = 1.5


def stored_image(tmp_path, affine: np.ndarray, shape=(37, 30, 22)) -> str:
    rng = np.random.default_rng(0)
    path = str(tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image((100 + 10 * rng.standard_normal(shape)).astype(np.float32), affine), path)
    return path


def smooth_probabilities(shape: tuple[int, ...], channels: int = 3) -> torch.Tensor:
    rng = np.random.default_rng(1)
    logits = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 8 for _ in range(channels)])
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=0)


@pytest.mark.parametrize("slab", [4, 16])
def test_probabilities_are_trilinear_at_every_stored_voxel_and_the_labels_their_arg_max(tmp_path, monkeypatch, slab):
    monkeypatch.setattr(resample, "SLAB", slab)  # several slabs, and one covering the whole first axis
    affine = np.diag([-1.0, 1.2, 0.9, 1.0])  # a flip and two spacings, none the model's
    affine[:3, 3] = (12.0, -7.0, 3.0)
    volume = load_model_volume(stored_image(tmp_path, affine), SPACING)
    probabilities = smooth_probabilities(tuple(volume.image.shape[1:]))
    out = resample.to_original_probabilities(volume, probabilities)
    assert tuple(out.shape) == (3, *volume.original_shape) and out.dtype == torch.float32

    # reference: SciPy's linear interpolation at each stored voxel's model coordinates, edges held
    stored = np.argwhere(np.ones(volume.original_shape, bool))
    at = apply_affine(original_to_volume(volume.original_affine, volume.affine), stored).T
    for channel in range(3):
        expected = ndimage.map_coordinates(probabilities[channel].double().numpy(), at, order=1, mode="nearest")
        assert np.allclose(out[channel].numpy().ravel(), expected, atol=1e-5)
    assert torch.allclose(out.sum(0), torch.ones(volume.original_shape), atol=1e-5)
    labels = resample.to_original_argmax(volume, probabilities)
    assert labels.dtype == torch.uint8 and torch.equal(labels, torch.argmax(out, dim=0).to(torch.uint8))
    assert len(torch.unique(labels)) == 3


def test_an_oblique_grid_falls_back_to_the_nearest_model_voxel(tmp_path):
    loaded = load_model_volume(stored_image(tmp_path, np.eye(4)), SPACING)
    angle = np.deg2rad(20)
    rotated = np.eye(4)
    rotated[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    volume = dataclasses.replace(loaded, affine=rotated @ loaded.affine)  # model axes oblique to the stored ones
    probabilities = smooth_probabilities(tuple(volume.image.shape[1:]))
    labels = resample.to_original_argmax(volume, probabilities)
    assert torch.equal(labels, resample.to_original_labels(volume, torch.argmax(probabilities, dim=0).to(torch.uint8)))
    assert len(torch.unique(labels)) == 3
    steps = resample.to_original_probabilities(volume, probabilities) * 255  # nearest, in steps of 1/255
    assert torch.allclose(steps, steps.round(), atol=1e-3) and len(torch.unique(steps)) > 100
