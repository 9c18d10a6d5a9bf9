"""Sample data: template classes, pseudo-subjects in world space, the studies-folder builder, class names."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lib.data.build_sample import build
from lib.data.classes import read_class_names
from lib.data.mni import CLASS_NAMES, load_template
from lib.data.synth import make_subject, orientation_matrix


@pytest.fixture(scope="module")
def template():
    return load_template()


def test_template_classes_are_disjoint_and_plausible(template):
    volumes_ml = {name: float((template.labels == index).sum()) / 1000 for index, name in CLASS_NAMES.items()}
    assert 400 < volumes_ml["white_matter"] < 800
    assert 500 < volumes_ml["grey_matter"] < 1200
    assert 5 < volumes_ml["lateral_ventricles"] < 40
    assert set(np.unique(template.labels)) == {0, 1, 2, 3}  # one value per voxel: disjoint by construction
    _, count = ndimage.label(template.labels == 3)
    assert count <= 2  # the two lateral ventricles


def test_orientation_matrix():
    assert np.array_equal(orientation_matrix("LPS"), np.diag([-1.0, -1.0, 1.0]))
    assert np.array_equal(orientation_matrix("PIR") @ [1, 0, 0], [0, -1, 0])


def agreement(template, subject) -> float:
    """Fraction of template white matter that lands on subject white matter through the subject's own affine."""
    voxels = np.argwhere(template.labels == 1)[::50]
    world = voxels @ template.affine[:3, :3].T + template.affine[:3, 3]
    subject_world = world @ subject.warp[:3, :3].T + subject.warp[:3, 3]
    inverse = np.linalg.inv(subject.affine)
    ijk = np.round(subject_world @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < subject.labels.shape), axis=1)
    hits = subject.labels[tuple(ijk[inside].T)] == 1
    return float(hits.sum()) / len(voxels)


@pytest.mark.parametrize("seed", [8, 2])  # PIR with anisotropic voxels; LPS
def test_subjects_keep_anatomy_in_world_space_whatever_their_grid(template, seed):
    subject = make_subject(template, np.random.default_rng(seed))
    assert subject.orientation in {"PIR", "LPS"}
    assert subject.image.shape == subject.labels.shape and subject.image.dtype == np.int16
    assert agreement(template, subject) > 0.8  # only the smooth elastic warp (a few mm) moves voxels
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = subject.labels.shape[0] - 1  # the classic left-right error: same field of view, axis reversed
    flipped = type(subject)(**{**subject.__dict__, "affine": subject.affine @ flip})
    assert agreement(template, flipped) < 0.7  # a wrong affine is caught


def test_build_sample_writes_studies_folders(tmp_path):
    manifest = build(tmp_path, seed=3, pool=2, labeled=1, eval_count=1, train=1, workers=1)
    studies = tmp_path / "studies"
    assert sorted(p.name for p in studies.glob("*.nii.gz")) == ["subj_000.nii.gz", "subj_001.nii.gz"]
    assert [p.name for p in (studies / "labels" / "final").iterdir()] == ["subj_000.nii.gz"]
    assert (tmp_path / "studies_gt" / "subj_001.nii.gz").exists()
    assert (tmp_path / "eval" / "labels" / "final" / "eval_000.nii.gz").exists()
    image = nib.load(studies / "subj_000.nii.gz")
    label = nib.load(studies / "labels" / "final" / "subj_000.nii.gz")
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)
    assert len({tuple(s["spacing"]) + (s["orientation"],) for s in manifest["subjects"]}) >= 2
    assert json.loads((tmp_path / "manifest.json").read_text())["parameters"]["pool"] == 2
    assert read_class_names(studies) == CLASS_NAMES


def test_class_names_from_saved_label_info(tmp_path):
    (tmp_path / "classes.txt").write_text("1 white_matter\n")
    datastore = {"objects": {"a": {"labels": {"final": {"info": {
        "label_info": [{"name": "tumour", "idx": 5}, {"name": "background", "idx": 0}]}}}}}}
    (tmp_path / "datastore_v2.json").write_text(json.dumps(datastore))
    assert read_class_names(tmp_path) == {1: "white_matter", 5: "tumour"}
