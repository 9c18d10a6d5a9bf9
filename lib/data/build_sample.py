"""Build the sample dataset: MONAI Label studies folders of MNI152 pseudo-subjects.

    python -m lib.data.build_sample --out data/sample

Writes ``studies/`` (the server's pool: ``--labeled`` images with ``labels/final``, the rest unlabeled),
``studies_gt/`` (ground truth of the unlabeled pool, never served), ``eval/`` (held-out, studies layout) and
``train/`` (starter pretraining, studies layout), each with ``classes.txt``, plus ``manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from lib.data.mni import CLASS_NAMES, load_template
from lib.data.synth import make_subject

SPLITS = ("studies", "eval", "train")
_template = None


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def _make(job: tuple[int, str, Path, Path | None]) -> dict:
    """Generate subject ``seed`` and write its image and label."""
    global _template
    if _template is None:
        _template = load_template()
    seed, name, image_path, label_path = job
    subject = make_subject(_template, np.random.default_rng(seed))
    _write(image_path, subject.image, subject.affine)
    _write(label_path, subject.labels, subject.affine)
    volume_ml = float(np.prod(subject.spacing)) / 1000.0
    return {
        "name": name, "seed": seed, "shape": list(subject.image.shape), "spacing": list(subject.spacing),
        "orientation": subject.orientation,
        "class_ml": {CLASS_NAMES[i]: round(float((subject.labels == i).sum()) * volume_ml, 1) for i in CLASS_NAMES},
    }


def _write_classes(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in CLASS_NAMES.items()))


def build(out: Path, seed: int = 0, pool: int = 12, labeled: int = 3, eval_count: int = 4, train: int = 12,
          workers: int = 2) -> dict:
    """Write the dataset (see module docstring) and return its manifest."""
    jobs: list[tuple[int, str, Path, Path | None]] = []
    subject_seed = seed * 1000
    for i in range(pool):
        name = f"subj_{i:03d}"
        label_dir = out / "studies" / "labels" / "final" if i < labeled else out / "studies_gt"
        jobs.append((subject_seed + i, name, out / "studies" / f"{name}.nii.gz", label_dir / f"{name}.nii.gz"))
    for split, count, offset in (("eval", eval_count, 100), ("train", train, 200)):
        for i in range(count):
            name = f"{split}_{i:03d}"
            jobs.append((subject_seed + offset + i, name, out / split / f"{name}.nii.gz",
                         out / split / "labels" / "final" / f"{name}.nii.gz"))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as executor:
        subjects = []
        for record in executor.map(_make, jobs):
            subjects.append(record)
            print(f"  {record['name']}: {record['orientation']} {record['spacing']} {record['shape']}", flush=True)
    for split in SPLITS:
        _write_classes(out / split)
    manifest = {
        "parameters": {"seed": seed, "pool": pool, "labeled": labeled, "eval": eval_count, "train": train},
        "source": "MNI152 2009 T1 template and tissue maps bundled with nilearn",
        "classes": {str(i): n for i, n in CLASS_NAMES.items()},
        "seconds": round(time.perf_counter() - start, 1),
        "subjects": subjects,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ensure_sample(out: Path, **parameters) -> Path:
    """Build the dataset into ``out`` unless a dataset with the same parameters is already there."""
    wanted = {"seed": 0, "pool": 12, "labeled": 3, "eval": 4, "train": 12}
    wanted.update({k.replace("eval_count", "eval"): v for k, v in parameters.items() if k != "workers"})
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("parameters") == wanted:
        return out
    build(out, seed=wanted["seed"], pool=wanted["pool"], labeled=wanted["labeled"], eval_count=wanted["eval"],
          train=wanted["train"], workers=parameters.get("workers", 2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=12)
    parser.add_argument("--labeled", type=int, default=3)
    parser.add_argument("--eval", type=int, default=4)
    parser.add_argument("--train", type=int, default=12)
    parser.add_argument("--force", action="store_true", help="rebuild even if the manifest matches")
    args = parser.parse_args()
    if args.force and (args.out / "manifest.json").exists():
        (args.out / "manifest.json").unlink()
    ensure_sample(args.out, seed=args.seed, pool=args.pool, labeled=args.labeled, eval_count=args.eval,
                  train=args.train)
    print(f"sample data ready in {args.out}")


if __name__ == "__main__":
    main()
