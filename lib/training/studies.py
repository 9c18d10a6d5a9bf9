"""Image/label pairs of a MONAI Label studies folder (``labels/final``)."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


def image_id(path: Path) -> str:
    name = path.name
    return next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.endswith(s)), path.stem)


def labeled_pairs(studies: Path) -> list[tuple[Path, Path]]:
    """(image, final label) pairs, matched by image id, sorted by id."""
    labels = {image_id(p): p for p in (studies / "labels" / "final").iterdir() if p.name.endswith(IMAGE_SUFFIXES)}
    pairs = []
    for image in sorted(studies.iterdir()):
        if image.is_file() and image.name.endswith(IMAGE_SUFFIXES) and image_id(image) in labels:
            pairs.append((image, labels[image_id(image)]))
    return pairs
