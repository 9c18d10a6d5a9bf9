"""Prototype bank pieces: crop cover, clustering, prompt spreading, persistence and its failure modes."""

import logging

import numpy as np
import pytest
import torch

from lib.prompts.regions import spread_points
from lib.prototypes.auto import class_probabilities
from lib.prototypes.bank import ImageEntry, PrototypeBank, kmeans
from lib.prototypes.features import cover_crops


def test_cover_crops_cover_every_voxel_of_a_large_and_a_small_volume():
    for shape in ((300, 128, 90), (100, 140, 257)):
        covered = np.zeros(shape, dtype=bool)
        for crop in cover_crops(shape, 128):
            lo = np.maximum(np.asarray(crop.origin, dtype=int), 0)
            covered[lo[0] : lo[0] + 128, lo[1] : lo[1] + 128, lo[2] : lo[2] + 128] = True
        assert covered.all()
    assert len(cover_crops((120, 140, 120), 128)) == 2


def test_kmeans_separates_two_directions_and_spread_points_keeps_distance():
    rng = np.random.default_rng(0)
    a = torch.nn.functional.normalize(torch.tensor([1.0, 0, 0]) + 0.05 * torch.randn(50, 3), dim=1)
    b = torch.nn.functional.normalize(torch.tensor([0, 1.0, 0]) + 0.05 * torch.randn(30, 3), dim=1)
    centers = kmeans(torch.cat([a, b]), torch.ones(80), 2)
    assert sorted(int(torch.argmax(c)) for c in centers) == [0, 1]
    points = rng.uniform(0, 100, size=(200, 3))
    weights = points[:, 0]
    chosen = spread_points(points, weights, 4)
    centroid = (points * weights[:, None]).sum(0) / weights.sum()
    assert np.array_equal(chosen[0], points[np.argmin(np.linalg.norm(points - centroid, axis=1))])
    noisy = spread_points(points, weights * (1 + 1e-6 * rng.standard_normal(200)), 4)  # float noise, same picks
    assert np.array_equal(chosen, noisy)
    assert min(np.linalg.norm(p - q) for i, p in enumerate(chosen) for q in chosen[i + 1 :]) > 30


def test_probabilities_follow_the_nearest_prototype():
    features = torch.eye(3)
    probabilities = class_probabilities(features, [torch.eye(3)[1:2], torch.eye(3)[2:3]], torch.eye(3)[0:1])
    assert torch.equal(torch.argmax(probabilities, dim=0), torch.tensor([0, 1, 2]))


def test_bank_round_trip_and_a_corrupt_file_is_reported_and_emptied(tmp_path, caplog):
    path = tmp_path / "prototypes" / "bank.pt"
    bank = PrototypeBank(path)
    bank.model_version = "v"
    bank.entries["img"] = ImageEntry(7, {"liver": torch.ones(2, 4)}, torch.zeros(3, 4))
    bank.save()
    loaded = PrototypeBank(path)
    assert loaded.model_version == "v" and loaded.class_names() == ["liver"] and loaded.entries["img"].label_ts == 7
    assert [p.name for p in path.parent.iterdir()] == ["bank.pt"]  # no temporary file left
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.ERROR):
        broken = PrototypeBank(path)
    assert broken.entries == {} and broken.load_error and "will be rebuilt" in caplog.text


def test_a_subset_of_the_bank_lives_in_memory_and_keeps_the_chosen_images_only(tmp_path):
    bank = PrototypeBank(tmp_path / "bank.pt")
    bank.model_version = "v"
    bank.entries = {image: ImageEntry(1, {name: torch.ones(2, 4)}, torch.zeros(3, 4))
                    for image, name in (("a", "liver"), ("b", "spleen"))}
    subset = bank.subset({"a"})
    assert subset.model_version == "v" and subset.class_names() == ["liver"] and set(bank.entries) == {"a", "b"}
    with pytest.raises(ValueError, match="in memory only"):
        subset.save()
    assert not (tmp_path / "bank.pt").exists()


def test_image_entry_skips_empty_and_unnamed_classes_with_a_reason(starter_checkpoint, tmp_path, caplog):
    from lib.engine.model_store import ModelStore
    from lib.engine.predictor import InteractivePredictor
    from lib.prototypes.bank import image_entry
    from lib.transforms.preprocess import load_model_volume
    from tests.conftest import lps_anisotropic_affine, write_nifti

    affine = lps_anisotropic_affine()
    image = np.random.default_rng(0).normal(100, 10, size=(60, 50, 30)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[10:40, 10:30, 5:20] = 1
    label[45:55, 35:45, 20:25] = 5
    image_path = write_nifti(tmp_path / "image.nii.gz", image, affine)
    label_path = write_nifti(tmp_path / "label.nii.gz", label, affine)
    predictor = InteractivePredictor(ModelStore(starter_checkpoint))
    volume = load_model_volume(str(image_path), 1.5)
    with caplog.at_level(logging.WARNING):
        entry = image_entry(predictor, volume, str(label_path), {"a": 1, "b": 2}, 3, 1.5)
    assert list(entry.classes) == ["a"] and entry.classes["a"].shape[1] == 192 and entry.background.shape[0] >= 1
    assert "Skipping class 'b'" in caplog.text and "Skipping values [5]" in caplog.text
