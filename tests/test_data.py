"""Sample data: template classes, pseudo-subjects in world space, the studies-folder builder, class names."""

from __future__ import annotations

import json
import socket

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lib.data.build_sample import MANIFEST, build_parameters, ensure_sample, is_built, write_nifti
from lib.data.classes import read_class_names
from lib.data.mni import CLASS_NAMES, load_template
from lib.data.synth import make_subject, orientation_matrix

GRIDS = {"RAS": (1.0, 1.0, 1.0), "PIR": (1.0, 1.0, 1.5), "LPS": (0.9, 0.9, 1.2)}


def _no_network(*args, **kwargs):
    raise AssertionError("the sample data must not download anything")


@pytest.fixture(scope="module")
def template():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        return load_template()


@pytest.fixture(scope="module")
def subjects(template, tmp_path_factory):
    """One seed on three grids, each written to NIfTI and read back: {orientation: (labels, affine, warp)}."""
    folder = tmp_path_factory.mktemp("subjects")
    loaded = {}
    for orientation, spacing in GRIDS.items():
        subject = make_subject(template, np.random.default_rng(5), orientation, spacing)
        write_nifti(folder / f"{orientation}.nii.gz", subject.labels, subject.affine)
        image = nib.load(folder / f"{orientation}.nii.gz")
        assert nib.aff2axcodes(image.affine) == tuple(orientation)
        assert np.allclose(image.header.get_zooms(), spacing)
        assert subject.image.shape == image.shape and subject.image.dtype == np.int16 and image.get_data_dtype() == "u1"
        loaded[orientation] = (np.asarray(image.dataobj), image.affine, subject.warp)
    return loaded


def to_template(template, labels: np.ndarray, affine: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """Subject labels looked up (nearest voxel) at every other template voxel through the subject's own affine."""
    ijk = np.indices(template.labels.shape, dtype=np.float32)[:, ::2, ::2, ::2]
    matrix = (np.linalg.inv(affine) @ warp @ template.affine).astype(np.float32)
    coords = np.einsum("ij,j...->i...", matrix[:3, :3], ijk) + matrix[:3, 3].reshape(3, 1, 1, 1)
    return ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_template_classes_are_disjoint_and_plausible(template):
    assert set(np.unique(template.labels)) == {0, 1, 2, 3}  # one value per voxel: disjoint by construction
    volumes_ml = {name: float((template.labels == index).sum()) / 1000 for index, name in CLASS_NAMES.items()}
    # the MNI152 2009 brain is large (1.88 l mask; its own GM/WM maps sum to 1008/670 ml)
    assert 550 < volumes_ml["white_matter"] < 700
    assert 900 < volumes_ml["grey_matter"] < 1150
    assert 10 < volumes_ml["lateral_ventricles"] < 30
    components, count = ndimage.label(template.labels == 3)
    assert count == 2  # left and right lateral ventricle
    centroids = ndimage.center_of_mass(template.labels == 3, components, [1, 2])
    x = sorted(float(template.affine[0, :3] @ c + template.affine[0, 3]) for c in centroids)
    assert -35 < x[0] < -5 and 5 < x[1] < 35  # one per hemisphere, near the midline
    mean_t1 = [float(template.t1[template.labels == i].mean()) for i in (3, 2, 1)]
    assert mean_t1 == sorted(mean_t1)  # T1 contrast: CSF < grey < white


def test_orientation_matrix():
    assert np.array_equal(orientation_matrix("LPS"), np.diag([-1.0, -1.0, 1.0]))
    assert np.array_equal(orientation_matrix("PIR") @ [1, 0, 0], [0, -1, 0])
    for bad in ("RRS", "RA", "XYZ"):
        with pytest.raises(ValueError):
            orientation_matrix(bad)


def test_subjects_are_the_same_brain_in_world_space_whatever_their_grid(template, subjects):
    reference = template.labels[::2, ::2, ::2]
    back = {orientation: to_template(template, *subject) for orientation, subject in subjects.items()}
    for orientation in GRIDS:
        # the template's anatomy, up to the elastic warp (a few mm); measured WM 0.82-0.85, ventricles 0.69
        assert dice(back[orientation] == 1, reference == 1) > 0.75
        assert dice(back[orientation] == 3, reference == 3) > 0.6
    for orientation in ("PIR", "LPS"):
        # the same seed on another grid: only nearest-neighbour resampling differs; measured 0.91-0.93
        assert dice(back[orientation] == 1, back["RAS"] == 1) > 0.85


def test_a_wrong_affine_is_caught(template, subjects):
    labels, affine, warp = subjects["PIR"]
    reference = template.labels[::2, ::2, ::2] == 1
    wrong = [np.diag([-1.0, 1.0, 1.0, 1.0]) @ affine]  # left-right mirrored world (the symmetric template's trap)
    for axis in range(3):  # one voxel axis reversed, same field of view
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1.0, labels.shape[axis] - 1
        wrong.append(affine @ flip)
    for matrix in wrong:  # measured 0.37-0.60
        assert dice(to_template(template, labels, matrix, warp) == 1, reference) < 0.65


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample(tmp_path_factory.mktemp("sample"), seed=3, pool=2, labeled=1, eval_count=1, train=1, workers=2)


def test_build_sample_writes_studies_folders(sample):
    studies = sample / "studies"
    assert sorted(p.name for p in studies.glob("*.nii.gz")) == ["subj_000.nii.gz", "subj_001.nii.gz"]
    assert [p.name for p in (studies / "labels" / "final").iterdir()] == ["subj_000.nii.gz"]
    assert [p.name for p in (sample / "studies_gt").iterdir()] == ["subj_001.nii.gz"]
    for split in ("eval", "train"):
        assert (sample / split / f"{split}_000.nii.gz").is_file()
        assert (sample / split / "labels" / "final" / f"{split}_000.nii.gz").is_file()
    image = nib.load(studies / "subj_000.nii.gz")
    label = nib.load(studies / "labels" / "final" / "subj_000.nii.gz")
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)
    labels, intensities = np.asarray(label.dataobj), np.asarray(image.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3} and image.get_data_dtype() == np.int16
    mean = [float(intensities[labels == i].mean()) for i in (0, 3, 2, 1)]
    assert mean == sorted(mean)  # image and labels aligned: background < ventricles < grey < white on T1
    for folder in ("studies", "eval", "train"):
        assert read_class_names(sample / folder) == CLASS_NAMES

    manifest = json.loads((sample / MANIFEST).read_text())
    assert manifest["parameters"] == build_parameters(3, 2, 1, 1, 1)
    records = manifest["subjects"]
    assert len({r["seed"] for r in records}) == 4 and len({(r["orientation"], *r["spacing"]) for r in records}) >= 2
    for record in records:
        assert 500 < record["class_ml"]["white_matter"] < 900 and 5 < record["class_ml"]["lateral_ventricles"] < 45


def test_build_sample_is_idempotent(sample):
    mtime = (sample / MANIFEST).stat().st_mtime_ns
    ensure_sample(sample, seed=3, pool=2, labeled=1, eval_count=1, train=1)  # already built: nothing happens
    assert (sample / MANIFEST).stat().st_mtime_ns == mtime
    assert not is_built(sample, build_parameters(3, 3, 1, 1, 1))  # other parameters: rebuild
    image = sample / "studies" / "subj_001.nii.gz"
    image.rename(image.with_suffix(".moved"))
    try:
        assert not is_built(sample, build_parameters(3, 2, 1, 1, 1))  # a missing file: rebuild
    finally:
        image.with_suffix(".moved").rename(image)
    assert is_built(sample, build_parameters(3, 2, 1, 1, 1))


def test_monai_label_datastore_sees_the_pool_and_label_info(sample):
    from monailabel.datastore.local import LocalDatastore  # slow import (~8 s), only here

    datastore = LocalDatastore(str(sample / "studies"), extensions=("*.nii.gz", "*.nii"))
    assert sorted(datastore.list_images()) == ["subj_000", "subj_001"]
    assert datastore.get_labeled_images() == ["subj_000"]
    info = datastore.get_label_info("subj_000", "final")
    assert {entry["idx"]: entry["name"] for entry in info["label_info"]} == CLASS_NAMES


def test_class_names_from_saved_label_info(tmp_path):
    (tmp_path / "classes.txt").write_text("1 white_matter\n")
    datastore = {"objects": {"a": {"labels": {"final": {"info": {
        "label_info": [{"name": "tumour", "idx": 5}, {"name": "background", "idx": 0}]}}}}}}
    (tmp_path / "datastore_v2.json").write_text(json.dumps(datastore))
    assert read_class_names(tmp_path) == {1: "white_matter", 5: "tumour"}
