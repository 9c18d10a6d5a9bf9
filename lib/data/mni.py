"""The MNI152 T1 template shipped with nilearn and three anatomical classes derived from its own tissue maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nilearn import datasets
from scipy import ndimage

CLASS_NAMES: dict[int, str] = {1: "white_matter", 2: "grey_matter", 3: "lateral_ventricles"}

# lateral ventricles lie in this MNI box (mm): central, above the thalamus, from the frontal to the occipital horn
VENTRICLE_BOX_MM = ((-32.0, 32.0), (-50.0, 40.0), (-2.0, 36.0))


@dataclass(frozen=True)
class Template:
    t1: np.ndarray  # float32, 0..1
    labels: np.ndarray  # uint8, CLASS_NAMES indices
    affine: np.ndarray


def _array(image) -> np.ndarray:
    return np.asarray(image.dataobj, dtype=np.float32)


def load_template() -> Template:
    """The 1 mm MNI152 2009 template (bundled with nilearn, no download) with WM, GM and lateral ventricles."""
    t1_image = datasets.load_mni152_template(resolution=1)
    t1 = _array(t1_image)
    gm = _array(datasets.load_mni152_gm_template(resolution=1))
    wm = _array(datasets.load_mni152_wm_template(resolution=1))
    brain = _array(datasets.load_mni152_brain_mask(resolution=1)) > 0
    labels = np.zeros(t1.shape, dtype=np.uint8)
    tissue = brain & (np.maximum(gm, wm) > 0.5)
    labels[tissue & (wm >= gm)] = 1
    labels[tissue & (gm > wm)] = 2
    labels[lateral_ventricles(t1, gm, wm, brain, t1_image.affine)] = 3
    return Template(t1=t1, labels=labels, affine=np.asarray(t1_image.affine, dtype=np.float64))


def lateral_ventricles(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, brain: np.ndarray,
                       affine: np.ndarray) -> np.ndarray:
    """CSF-like voxels (dark on T1, neither grey nor white matter) inside the central MNI box, as the two
    largest connected components (one per hemisphere, or one when they touch)."""
    csf = brain & (gm < 0.4) & (wm < 0.4) & (t1 < np.percentile(t1[brain], 25))
    ijk = np.indices(t1.shape).reshape(3, -1)
    world = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3, *t1.shape))
    inside = np.ones(t1.shape, dtype=bool)
    for axis, (low, high) in enumerate(VENTRICLE_BOX_MM):
        inside &= (world[axis] >= low) & (world[axis] <= high)
    candidates = ndimage.binary_opening(csf & inside, iterations=1)
    components, count = ndimage.label(candidates)
    if count == 0:
        return np.zeros(t1.shape, dtype=bool)
    sizes = np.bincount(components.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:2] + 1
    keep = [k for k in keep if sizes[k - 1] >= 0.2 * sizes.max()]
    return np.isin(components, keep)
