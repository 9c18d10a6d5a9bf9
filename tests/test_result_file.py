"""Result files as clients read them: every voxel at the same place in the world, whatever the format."""

from __future__ import annotations

import gzip
import os
import tempfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lib.errors import InvalidRequest
from lib.infers.result_file import result_dtype, write_result
from tests.conftest import lps_anisotropic_affine

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def fortran_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """An asymmetric uint8 mask in the Fortran-ordered memory the predictor pastes into."""
    mask = torch.zeros(shape[::-1], dtype=torch.uint8).permute(2, 1, 0)
    mask[2:5, 1:3, 4:9] = 1
    mask[7, 6, 1] = 1
    return mask.numpy()


def world_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    voxels = np.argwhere(mask > 0)
    return np.round(voxels @ affine[:3, :3].T + affine[:3, 3], 4)


@pytest.mark.parametrize("extension, compress", [(".nrrd", False), (".nrrd", True), (".nii", False),
                                                 (".nii.gz", False)])
def test_written_voxels_stay_in_place(extension, compress, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the result's temporary file goes with the test
    rotation = np.eye(4)
    rotation[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]  # axes permuted as well as flipped and anisotropic
    affine = rotation @ lps_anisotropic_affine()
    mask = fortran_mask((9, 8, 10))
    path = write_result(mask, affine, extension, compress)
    assert os.path.dirname(path) == str(tmp_path)
    image = sitk.ReadImage(path)  # what 3D Slicer's reader (ITK) makes of it
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    lps = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    read_affine = np.eye(4)
    read_affine[:3, :3], read_affine[:3, 3] = LPS_TO_RAS @ lps, LPS_TO_RAS @ np.array(image.GetOrigin())
    assert array.dtype == np.uint8 and array.shape == mask.shape
    assert np.array_equal(world_points(array, read_affine), world_points(mask, affine))
    if extension == ".nrrd":
        with open(path, "rb") as f:
            header = f.read(1000)
        assert (b"encoding: gzip" in header) == compress
    if extension == ".nii.gz":
        with gzip.open(path) as f:
            assert f.read(4)  # really gzip


def test_unknown_result_dtype_is_a_request_error():
    assert result_dtype(None) == np.uint8 and result_dtype("float32") == np.float32
    with pytest.raises(InvalidRequest, match="result_dtype"):
        result_dtype("voxels")
