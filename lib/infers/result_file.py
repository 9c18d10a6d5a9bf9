"""The result label file in the format the client asked for (``result_extension``, ``result_dtype``,
``result_compress``): NIfTI with nibabel, NRRD with pynrrd, both straight from the Fortran-ordered mask."""

from __future__ import annotations

import os
import tempfile

import nibabel as nib
import nrrd
import numpy as np

from lib.errors import InvalidRequest

WRITTEN_HERE = (".nii", ".nii.gz", ".nrrd")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def result_dtype(value: object) -> np.dtype:
    """The requested voxel type (uint8 by default); a 422 for an unknown one."""
    try:
        return np.dtype(value or np.uint8)
    except TypeError as e:
        raise InvalidRequest(f"Unknown result_dtype {value!r}") from e


def write_result(array: np.ndarray, affine: np.ndarray, extension: str, compress: bool = False) -> str:
    """``array`` (voxels of the stored image, RAS ``affine``) written to a new temporary file of ``extension``, one of
    :data:`WRITTEN_HERE`. NRRD is raw unless ``compress`` (gzip, level 1), as MONAI Label writes it by default;
    ``.nii.gz`` is always compressed."""
    handle, path = tempfile.mkstemp(suffix=extension)
    os.close(handle)
    affine = np.asarray(affine, dtype=np.float64)
    if extension == ".nrrd":
        header = {
            "space": "left-posterior-superior",
            "space directions": (RAS_TO_LPS @ affine[:3, :3]).T,  # row a: the step along voxel axis a
            "space origin": RAS_TO_LPS @ affine[:3, 3],
            "kinds": ["domain"] * 3,
            "encoding": "gzip" if compress else "raw",
        }
        nrrd.write(path, np.asfortranarray(array), header, index_order="F", compression_level=1)
    else:
        nib.save(nib.Nifti1Image(array, affine), path)
    return path
