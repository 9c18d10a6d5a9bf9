"""Shared fixtures: small real NIfTI volumes and a random-weight starter checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

os.environ.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")
torch.set_num_threads(2)

REPO_ROOT = Path(__file__).resolve().parents[1]


def lps_anisotropic_affine(spacing=(0.8, 1.0, 2.0), origin=(40.0, 50.0, -30.0)) -> np.ndarray:
    """A non-RAS affine: first axis runs right-to-left (L), second posterior (P), third superior, anisotropic."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.fixture(scope="session")
def starter_checkpoint(tmp_path_factory) -> Path:
    """A starter-variant checkpoint with seeded random weights, written the way the project saves its own."""
    from lib.model import build_sam3d, save_sam3d

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_starter.pt"
    save_sam3d(build_sam3d("starter"), path)
    return path
