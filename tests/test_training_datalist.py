"""The trainer's datalist: named classes mapped to the app's spelling, unusable labels skipped with a reason."""

import logging

import numpy as np
import pytest

from lib.datastore import ValidatingDatastore, label_classes
from lib.errors import InvalidRequest
from lib.trainers.auto_train import due_trainers, unseen_labels
from lib.trainers.datalist import training_datalist
from tests.conftest import lps_anisotropic_affine, write_nifti

APP_LABELS = {"white_matter": 1, "grey_matter": 2}


def test_label_info_names_map_to_the_app_spelling_and_new_names_stay():
    info = {"label_info": [{"name": "White Matter", "idx": 7}, {"name": "tumour", "idx": 2}]}
    assert label_classes(info, APP_LABELS) == {"white_matter": 7, "tumour": 2}
    assert label_classes({}, APP_LABELS) == APP_LABELS  # no names: the app's label map


def test_mismatched_empty_and_corrupt_labels_are_skipped_with_a_reason(tmp_path, caplog):
    affine = lps_anisotropic_affine()
    labels = tmp_path / "labels" / "final"
    labels.mkdir(parents=True)
    image = np.random.default_rng(0).random((20, 22, 12)).astype(np.float32)
    good = np.zeros(image.shape, np.uint8)
    good[5:10, 5:10, 3:6] = 1
    for name in ("good", "shape", "affine", "empty", "corrupt"):
        write_nifti(tmp_path / f"{name}.nii.gz", image, affine)
    write_nifti(labels / "good.nii.gz", good, affine)
    write_nifti(labels / "shape.nii.gz", good[:-1], affine)
    write_nifti(labels / "affine.nii.gz", good, lps_anisotropic_affine(spacing=(1.0, 1.0, 1.0)))
    write_nifti(labels / "empty.nii.gz", np.zeros_like(good), affine)
    (labels / "corrupt.nii.gz").write_bytes((labels / "good.nii.gz").read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        datalist = training_datalist(ValidatingDatastore(str(tmp_path)), APP_LABELS)
    assert [item["id"] for item in datalist] == ["good"] and datalist[0]["classes"] == APP_LABELS
    reasons = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records}
    assert "differs from image shape" in reasons["Skipping label of shape"]
    assert "affine" in reasons["Skipping label of affine"]
    assert "empty" in reasons["Skipping label of empty"]
    assert "not a readable image" in reasons["Skipping label of corrupt"]


def two_images_and_labels(folder) -> np.ndarray:
    """Images ``a`` and ``b`` and the label files ``good`` and ``empty`` (returned: the good one's voxels)."""
    affine = lps_anisotropic_affine()
    image = np.random.default_rng(0).random((20, 22, 12)).astype(np.float32)
    good = np.zeros(image.shape, np.uint8)
    good[5:10, 5:10, 3:6] = 1
    for name in ("a", "b"):
        write_nifti(folder / f"{name}.nii.gz", image, affine)
    write_nifti(folder / "good.nii.gz", good, affine)
    write_nifti(folder / "empty.nii.gz", np.zeros_like(good), affine)
    return good


def test_save_label_and_auto_training_use_the_same_check(tmp_path, caplog):
    two_images_and_labels(tmp_path)
    store = ValidatingDatastore(str(tmp_path))
    with pytest.raises(InvalidRequest, match="not saved: label is empty"):
        store.save_label("a", str(tmp_path / "empty.nii.gz"), "final", {})
    store.save_label("a", str(tmp_path / "good.nii.gz"), "final", {})
    assert unseen_labels(store, None) == ["a"]
    # an unusable file put in the folder by hand is not counted towards training, and the log says why
    (tmp_path / "labels" / "final" / "b.nii.gz").write_bytes((tmp_path / "empty.nii.gz").read_bytes())
    store = ValidatingDatastore(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert unseen_labels(store, None) == ["a"]
        trained = {"trained_on": [{"id": "a", "label_ts": store.get_label_info("a", "final")["ts"]}]}
        assert unseen_labels(store, trained) == []
    assert "Skipping label of b: label is empty" in caplog.text


def test_each_trainer_is_due_on_labels_new_to_its_own_version(tmp_path):
    two_images_and_labels(tmp_path)
    store = ValidatingDatastore(str(tmp_path))
    store.save_label("a", str(tmp_path / "good.nii.gz"), "final", {})
    nothing_published = {"sam3d": None, "segmentation": None}
    assert due_trainers(store, nothing_published, 1) == {"sam3d": ["a"], "segmentation": ["a"]}
    assert due_trainers(store, nothing_published, 2) == {}
    store.save_label("b", str(tmp_path / "good.nii.gz"), "final", {})
    assert due_trainers(store, nothing_published, 1) == {"sam3d": ["a", "b"], "segmentation": ["a", "b"]}
    head = {"trained_on": [{"id": "a", "label_ts": store.get_label_info("a", "final")["ts"]}],
            "validated_on": [{"id": "b", "label_ts": store.get_label_info("b", "final")["ts"]}]}
    assert due_trainers(store, {"sam3d": None, "segmentation": head}, 1) == {"sam3d": ["a", "b"]}
    assert due_trainers(store, nothing_published, 3) == {}
