"""Build the sample dataset: MONAI Label studies folders of MNI152 pseudo-subjects.

    python -m lib.data.build_sample --out data/sample [--seed 0] [--pool 12] [--labeled 3] [--eval 4] [--train 12]

Writes, each folder in MONAI Label's studies layout (images at the top, labels in ``labels/final``, ``classes.txt``):
``studies/`` (the server's pool; the first ``--labeled`` images have final labels, registered in the datastore file
``datastore_v2.json`` with their ``label_info``), ``studies_gt/`` (ground truth of the unlabeled pool, never served),
``eval/`` (held-out evaluation), ``train/`` (starter pretraining), plus ``manifest.json``. Rebuilds only when the
manifest's parameters differ (or with ``--force``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

from lib.data.classes import CLASSES_TXT, DATASTORE_JSON
from lib.data.mni import CLASS_NAMES, Template, load_template
from lib.data.synth import make_subject

FOLDERS = ("studies", "studies_gt", "eval", "train")
MANIFEST = "manifest.json"
VERSION = 2  # of the generator: a build made by another version is redone
PER_SPLIT = 100  # subject seeds: 1000 * seed + split offset (pool 0, eval 100, train 200) + index
_template: Template | None = None  # loaded once per worker process


@dataclass(frozen=True)
class Job:
    seed: int
    name: str
    split: str
    image: str  # paths relative to the output folder
    label: str


def plan(seed: int, pool: int, labeled: int, eval_count: int, train: int) -> list[Job]:
    """One job per subject, each with its own seed."""
    if not 0 <= labeled <= pool or max(pool, eval_count, train) > PER_SPLIT or min(eval_count, train) < 0:
        raise ValueError(f"Need 0 <= labeled <= pool and every count in 0..{PER_SPLIT}")
    jobs = []
    for i in range(pool):
        name = f"subj_{i:03d}"
        label = f"studies/labels/final/{name}.nii.gz" if i < labeled else f"studies_gt/{name}.nii.gz"
        jobs.append(Job(1000 * seed + i, name, "studies", f"studies/{name}.nii.gz", label))
    for split, count, offset in (("eval", eval_count, 100), ("train", train, 200)):
        for i in range(count):
            name = f"{split}_{i:03d}"
            jobs.append(Job(1000 * seed + offset + i, name, split, f"{split}/{name}.nii.gz",
                            f"{split}/labels/final/{name}.nii.gz"))
    return jobs


def build_parameters(seed: int, pool: int, labeled: int, eval_count: int, train: int) -> dict:
    """What the manifest records and ``ensure_sample`` compares."""
    return {"version": VERSION, "seed": seed, "pool": pool, "labeled": labeled, "eval": eval_count, "train": train}


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def _make(out: Path, job: Job) -> dict:
    """Generate and write one subject; returns its manifest record."""
    global _template
    if _template is None:
        _template = load_template()
    subject = make_subject(_template, np.random.default_rng(job.seed))
    write_nifti(out / job.image, subject.image, subject.affine)
    write_nifti(out / job.label, subject.labels, subject.affine)
    voxel_ml = float(np.prod(subject.spacing)) / 1000.0
    return {
        "name": job.name, "split": job.split, "seed": job.seed, "image": job.image, "label": job.label,
        "shape": list(subject.image.shape), "spacing": list(subject.spacing), "orientation": subject.orientation,
        "class_ml": {n: round(float((subject.labels == i).sum()) * voxel_ml, 1) for i, n in CLASS_NAMES.items()},
    }


def write_datastore(studies: Path, images: list[str], labeled: list[str]) -> None:
    """MONAI Label's ``datastore_v2.json`` (LocalDatastore's own format), so the final labels carry
    ``label_info`` as 3D Slicer sends it on save; the server keeps entries whose files exist."""
    now = int(time.time())
    label_info = [{"name": name, "idx": index} for index, name in CLASS_NAMES.items()]
    objects = {}
    for name in images:
        labels = {"final": {"ext": ".nii.gz", "info": {"ts": now, "name": f"{name}.nii.gz", "label_info": label_info}}}
        objects[name] = {"image": {"ext": ".nii.gz", "info": {"ts": now, "name": f"{name}.nii.gz"}},
                         "labels": labels if name in labeled else {}}
    datastore = {"name": "seg3d-sample", "description": "MNI152 pseudo-subjects", "images_dir": ".",
                 "labels_dir": "labels", "objects": objects}
    (studies / DATASTORE_JSON).write_text(json.dumps(datastore, indent=2) + "\n")


def build(out: Path, seed: int = 0, pool: int = 12, labeled: int = 3, eval_count: int = 4, train: int = 12,
          workers: int | None = None) -> dict:
    """Write the dataset from scratch (see module docstring; previous folders are replaced) and return its manifest."""
    jobs = plan(seed, pool, labeled, eval_count, train)
    (out / MANIFEST).unlink(missing_ok=True)
    for folder in FOLDERS:
        shutil.rmtree(out / folder, ignore_errors=True)
    for folder in FOLDERS:
        (out / folder).mkdir(parents=True)
        if folder != "studies_gt":
            (out / folder / CLASSES_TXT).write_text("".join(f"{i} {n}\n" for i, n in CLASS_NAMES.items()))
    start = time.perf_counter()
    subjects = []
    with ProcessPoolExecutor(max_workers=workers or min(os.cpu_count() or 1, 8)) as executor:
        for record in executor.map(partial(_make, out), jobs):
            subjects.append(record)
            print(f"[{len(subjects)}/{len(jobs)}] {record['image']}: {record['orientation']} {record['spacing']} "
                  f"{record['shape']} {time.perf_counter() - start:.0f}s", flush=True)
    names = [job.name for job in jobs if job.split == "studies"]
    write_datastore(out / "studies", names, names[:labeled])
    manifest = {
        "parameters": build_parameters(seed, pool, labeled, eval_count, train),
        "source": "MNI152 2009 symmetric T1 template and tissue maps bundled with nilearn",
        "classes": {str(i): n for i, n in CLASS_NAMES.items()},
        "seconds": round(time.perf_counter() - start, 1),
        "subjects": subjects,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ensure_sample(out: Path, seed: int = 0, pool: int = 12, labeled: int = 3, eval_count: int = 4, train: int = 12,
                  workers: int | None = None, force: bool = False) -> Path:
    """``out``, built first unless its manifest already records these parameters (one builder at a time)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = build_parameters(seed, pool, labeled, eval_count, train)
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not is_built(out, wanted):
            build(out, seed, pool, labeled, eval_count, train, workers)
    return out


def is_built(out: Path, parameters: dict) -> bool:
    """Whether ``out`` holds a finished build with these parameters and all its files."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        files = [out / s[key] for s in manifest["subjects"] for key in ("image", "label")]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return manifest.get("parameters") == parameters and all(f.is_file() for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=12, help="images in studies/")
    parser.add_argument("--labeled", type=int, default=3, help="of which with labels/final")
    parser.add_argument("--eval", type=int, default=4, help="held-out images in eval/")
    parser.add_argument("--train", type=int, default=12, help="pretraining images in train/")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the manifest matches")
    args = parser.parse_args()
    start = time.perf_counter()
    try:
        ensure_sample(args.out, args.seed, args.pool, args.labeled, args.eval, args.train, args.workers, args.force)
    except ValueError as e:
        parser.error(str(e))
    print(f"sample data ready in {args.out} ({time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()
