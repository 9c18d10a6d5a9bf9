"""Unseen-object evaluation data: pseudo-subjects of the template labelled with structures no training run uses
as a target, with and without synthetic head tissue.

    python -m lib.data.unseen --out data/sample [--count 4] [--seed 0]

Writes ``unseen/`` (skull-stripped, as the template) and ``unseen_head/`` (the same subjects with scalp and skull
shells), both MONAI Label studies folders with ``labels/final`` and ``classes.txt``. The structures: the template's
deep grey matter (grey-matter probability > 0.5, at least 15 mm inside the brain, in the central region) split per
hemisphere into parts by a watershed of its distance map, the lateral ventricles (held out of pretraining), and
three white-matter lesions of 0.5 to 20 ml per subject with appearances pretraining never paints
(:mod:`lib.data.lesions`). The deep grey parts lie inside the ``grey_matter`` class of the sample data, but none
is ever a training target: a click on one must segment that part, not all grey matter.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from nilearn import datasets
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from lib.data.build_sample import write_nifti
from lib.data.classes import CLASSES_TXT
from lib.data.head import add_head_tissue
from lib.data.lesions import LESION_KINDS, paint_lesions
from lib.data.mni import Template, load_template
from lib.data.synth import make_subject

DEEP_GREY_BOX_MM = ((-36.0, 36.0), (-42.0, 30.0), (-16.0, 24.0))
MIN_DEPTH_MM = 15.0
PARTS_PER_SIDE = 4
SEED_OFFSET = 300  # subject seeds 1000 * seed + 300 + index: other brains than the pool, eval and train splits
HEAD_MARGIN_MM = 30.0
VERSION = 2


def unseen_kinds() -> list[str]:
    """The evaluation's object kinds, in label order (as :func:`unseen_template` names them)."""
    parts = [f"deep_grey_{side}_{rank}" for side in ("left", "right") for rank in range(1, PARTS_PER_SIDE + 1)]
    return [*parts, "lateral_ventricles", *LESION_KINDS]


def world_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3, *shape))


def deep_grey_parts(template: Template) -> tuple[np.ndarray, dict[int, str]]:
    """Label map of the deep grey-matter parts and their names (``deep_grey_left_1`` ...), largest first per side."""
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    world = world_grid(gm.shape, template.affine)
    box = np.ones(gm.shape, dtype=bool)
    for axis, (low, high) in enumerate(DEEP_GREY_BOX_MM):
        box &= (world[axis] > low) & (world[axis] < high)
    deep = ndimage.binary_opening((gm > 0.5) & box & (ndimage.distance_transform_edt(brain) > MIN_DEPTH_MM))
    components, _ = ndimage.label(deep)
    deep = components == int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    labels, names = np.zeros(gm.shape, dtype=np.uint8), {}
    for side, half in (("left", world[0] < -1.0), ("right", world[0] > 1.0)):
        part = deep & half
        distance = ndimage.distance_transform_edt(part)
        peaks = peak_local_max(distance, min_distance=7, labels=part.astype(np.int32), num_peaks=PARTS_PER_SIDE)
        markers = np.zeros(part.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        basins = watershed(-distance, markers, mask=part)
        sizes = np.bincount(basins.ravel(), minlength=len(peaks) + 1)[1:]
        for rank, basin in enumerate(np.argsort(-sizes, kind="stable") + 1, start=1):
            index = len(names) + 1
            labels[basins == basin] = index
            names[index] = f"deep_grey_{side}_{rank}"
    return labels, names


def unseen_template() -> tuple[Template, dict[int, str], np.ndarray]:
    """The template with the unseen structures as its labels (deep grey parts, then the lateral ventricles), their
    names with the lesion kinds' after them, and the template's white matter (where lesions go)."""
    template = load_template()
    labels, names = deep_grey_parts(template)
    ventricles = len(names) + 1
    labels[template.labels == 3] = ventricles
    names[ventricles] = "lateral_ventricles"
    names.update({ventricles + 1 + i: kind for i, kind in enumerate(LESION_KINDS)})
    return Template(t1=template.t1, labels=labels, affine=template.affine), names, template.labels == 1


def with_lesions(template: Template, white_matter: np.ndarray, rng: np.random.Generator) -> Template:
    """The template with one lesion of each kind painted into its white matter (labels after the structures')."""
    first = int(template.labels.max()) + 1
    t1, labels, _ = paint_lesions(template.t1, template.labels, white_matter, first, rng)
    return Template(t1=t1, labels=labels, affine=template.affine)


def build(out: Path, count: int = 4, seed: int = 0) -> dict:
    start = time.perf_counter()
    template, names, white_matter = unseen_template()
    folders = {"unseen": out / "unseen", "unseen_head": out / "unseen_head"}
    for folder in folders.values():
        (folder / "labels" / "final").mkdir(parents=True, exist_ok=True)
        (folder / CLASSES_TXT).write_text("".join(f"{i} {n}\n" for i, n in names.items()))
    subjects = []
    for i in range(count):
        subject_seed = 1000 * seed + SEED_OFFSET + i
        lesioned = with_lesions(template, white_matter, np.random.default_rng([subject_seed, 1]))
        subject = make_subject(lesioned, np.random.default_rng(subject_seed), margin_mm=HEAD_MARGIN_MM)
        name = f"unseen_{i:03d}.nii.gz"
        head = add_head_tissue(subject.image, subject.spacing, np.random.default_rng(subject_seed))
        for folder, image in ((folders["unseen"], subject.image), (folders["unseen_head"], head)):
            write_nifti(folder / name, image, subject.affine)
            write_nifti(folder / "labels" / "final" / name, subject.labels, subject.affine)
        voxel_ml = float(np.prod(subject.spacing)) / 1000.0
        subjects.append({"name": name, "seed": subject_seed, "spacing": list(subject.spacing),
                         "class_ml": {n: round(float((subject.labels == k).sum()) * voxel_ml, 1)
                                      for k, n in names.items()}})
        print(f"[{i + 1}/{count}] {name} {time.perf_counter() - start:.0f}s", flush=True)
    manifest = {"version": VERSION, "count": count, "seed": seed, "classes": names, "subjects": subjects}
    (out / "unseen_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ensure_unseen(out: Path, count: int = 4, seed: int = 0) -> Path:
    """``out`` with ``unseen/`` and ``unseen_head/``, built unless the manifest already records these parameters."""
    out = Path(out)
    try:
        manifest = json.loads((out / "unseen_manifest.json").read_text())
        if (manifest["version"], manifest["count"], manifest["seed"]) == (VERSION, count, seed):
            return out
    except (OSError, ValueError, KeyError):
        pass
    build(out, count, seed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_unseen(args.out, args.count, args.seed)


if __name__ == "__main__":
    main()
