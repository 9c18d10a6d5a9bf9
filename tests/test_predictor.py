"""Interactive predictor: embedding cache hits, misses and invalidation; the infer task run the way the server does."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Spacingd

from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor, upsampled_output
from lib.infers.sam3d import Sam3DInfer
from lib.prompts.geometry import Crop, apply_affine, original_to_volume
from lib.transforms.preprocess import VolumeCache, load_model_volume
from tests.conftest import lps_anisotropic_affine, write_nifti


@pytest.fixture()
def image_path(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(100, 10, size=(90, 80, 60)).astype(np.float32)
    array[30:60, 20:50, 20:40] += 200
    return write_nifti(tmp_path / "image.nii.gz", array, lps_anisotropic_affine(spacing=(1.6, 1.5, 2.0)))


def volume_clicks(volume, points):
    return apply_affine(original_to_volume(volume.original_affine, volume.affine), np.asarray(points, dtype=float))


def test_follow_up_clicks_hit_the_embedding_cache(starter_checkpoint, image_path):
    predictor = InteractivePredictor(ModelStore(starter_checkpoint), autozoom=False)
    volume = load_model_volume(str(image_path), 1.5)
    fg = volume_clicks(volume, [[45, 35, 30]])
    first = predictor.segment(volume, fg, np.zeros((0, 3)), follow_border=False)
    second = predictor.segment(volume, fg, volume_clicks(volume, [[10, 10, 10]]), previous=first, follow_border=False)
    assert first.embedding_hits == [False] and second.embedding_hits == [True]
    assert predictor.embeddings.stats.misses == 1 and predictor.embeddings.stats.hits == 1
    assert second.fine.crop == first.fine.crop


def test_embeddings_are_invalidated_when_the_weights_change(starter_checkpoint, image_path, tmp_path):
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(starter_checkpoint.read_bytes())
    predictor = InteractivePredictor(ModelStore(checkpoint), autozoom=False)
    volume = load_model_volume(str(image_path), 1.5)
    fg = volume_clicks(volume, [[45, 35, 30]])
    before = predictor.segment(volume, fg, np.zeros((0, 3)), follow_border=False)
    assert len(predictor.embeddings) == 1
    time.sleep(0.01)
    checkpoint.write_bytes(starter_checkpoint.read_bytes())  # the trainer publishing new weights
    os.utime(checkpoint)
    after = predictor.segment(volume, fg, np.zeros((0, 3)), previous=before, follow_border=False)
    assert after.model_version != before.model_version
    assert after.embedding_hits == [False] and len(predictor.embeddings) == 1  # the stale entry was dropped


def test_embedding_cache_is_bounded(starter_checkpoint, tmp_path):
    long_image = np.random.default_rng(1).normal(100, 10, size=(300, 40, 30)).astype(np.float32)
    volume = load_model_volume(str(write_nifti(tmp_path / "long.nii.gz", long_image, np.eye(4))), 1.5)
    one_embedding = 192 * 8 * 8 * 8 * 4
    predictor = InteractivePredictor(ModelStore(starter_checkpoint), embedding_cache_bytes=2 * one_embedding,
                                     autozoom=False)
    for point in ([10, 20, 15], [150, 20, 15], [290, 20, 15]):  # three different crops along the long axis
        predictor.segment(volume, volume_clicks(volume, [point]), np.zeros((0, 3)), follow_border=False)
    assert len(predictor.embeddings) == 2 and predictor.embeddings.stats.evictions == 1


def test_spacingd_trap_and_the_infer_task_as_the_server_runs_it(starter_checkpoint, image_path):
    # MONAI 1.6's Spacingd fails on the string 'image_path' entry that BasicInferTask adds to every request
    plain = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Spacingd("image", pixdim=1.5)])
    with pytest.raises(RuntimeError):
        plain({"image": str(image_path), "image_path": str(image_path)})
    store = ModelStore(starter_checkpoint)
    task = Sam3DInfer(InteractivePredictor(store), VolumeCache(1.5, 1 << 30), {"object": 1})
    label_file, result = task({"image": str(image_path), "foreground": [[45, 35, 30]], "device": "cpu"})
    label = nib.load(label_file)
    image = nib.load(image_path)
    assert label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1}
    assert result["model_version"] == store.current_version() and result["latencies"]["total"] > 0
    os.remove(label_file)


def test_border_following_adds_a_coarse_pass_only_for_open_faces(starter_checkpoint):
    from lib.engine.predictor import touches_open_border
    from lib.prompts.geometry import Crop

    volume_shape = (300, 128, 128)
    logits = torch.full((1, 1, 32, 32, 32), -5.0)
    logits[0, 0, 10:20, 10:20, 10:20] = 5.0
    inside = Crop(origin=(100.0, 0.0, 0.0))
    assert not touches_open_border(logits, inside, volume_shape)
    logits[0, 0, 31, 10:20, 10:20] = 5.0  # reaches the crop's last slice along the long axis: the volume goes on
    assert touches_open_border(logits, inside, volume_shape)
    at_the_end = Crop(origin=(172.0, 0.0, 0.0))  # the crop's last slice is the volume's last slice
    assert not touches_open_border(logits, at_the_end, volume_shape)
    predictor = InteractivePredictor(ModelStore(starter_checkpoint))
    image = torch.zeros((1, *volume_shape))
    volume = SimpleNamespace(image=image)
    coarse = predictor.coarse_crop(volume, inside)
    low, high = coarse.extent()
    assert coarse.zoom > 1 and low[0] <= -0.5 and high[0] >= 299.5  # the coarse pass sees the whole object


def test_concurrent_clients_share_one_encoder_run_and_get_their_own_results(starter_checkpoint, image_path):
    predictor = InteractivePredictor(ModelStore(starter_checkpoint), autozoom=False)
    volume = load_model_volume(str(image_path), 1.5)
    clicks = [volume_clicks(volume, [[45, 35, 30 + k]]) for k in range(4)]
    expected = [predictor.to_original_mask(volume, predictor.segment(volume, c, np.zeros((0, 3)))) for c in clicks]
    predictor.embeddings.clear()
    misses_before = predictor.embeddings.stats.misses
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(
            lambda c: predictor.to_original_mask(volume, predictor.segment(volume, c, np.zeros((0, 3)))), clicks
        ))
    assert predictor.embeddings.stats.misses - misses_before == 1
    assert all(torch.equal(r, e) for r, e in zip(results, expected, strict=True))


def test_a_click_reuses_a_cached_crop_that_holds_it_well_inside(starter_checkpoint, tmp_path):
    """Embeddings computed for other crops (protosam3d's cover crops, another object) serve new objects."""
    from lib.prompts.geometry import place_crop

    long_image = np.random.default_rng(1).normal(100, 10, size=(300, 40, 30)).astype(np.float32)
    volume = load_model_volume(str(write_nifti(tmp_path / "long.nii.gz", long_image, np.eye(4))), 1.5)
    predictor = InteractivePredictor(ModelStore(starter_checkpoint))
    model, version = predictor.model()
    cached = place_crop(np.array([100.0, 13.0, 10.0]), tuple(volume.image.shape[1:]))
    predictor.embedding(model, version, volume, cached)
    inside = predictor.segment(volume, np.array([[80.0, 13.0, 10.0]]), np.zeros((0, 3)), follow_border=False)
    assert inside.fine.crop == cached and inside.embedding_hits == [True]
    near_face = predictor.segment(volume, np.array([[150.0, 13.0, 10.0]]), np.zeros((0, 3)), follow_border=False)
    assert near_face.fine.crop != cached and near_face.embedding_hits == [False]


def test_results_keep_an_axis_permuting_affine(starter_checkpoint, tmp_path):
    """A PIR-oriented image (the affine permutes axes): MONAI's NIfTI writer fails on it, seg3d's does not."""
    affine = np.array([[0.0, 0.0, -1.2, 90.0], [-1.0, 0.0, 0.0, 100.0], [0.0, 1.5, 0.0, -60.0], [0, 0, 0, 1]])
    array = np.random.default_rng(2).normal(100, 10, size=(70, 60, 50)).astype(np.float32)
    array[20:50, 20:40, 15:35] += 200
    image_path = write_nifti(tmp_path / "pir.nii.gz", array, affine)
    task = Sam3DInfer(InteractivePredictor(ModelStore(starter_checkpoint)), VolumeCache(1.5, 1 << 30), {"object": 1})
    label_file, _ = task({"image": str(image_path), "foreground": [[35, 30, 25]], "device": "cpu",
                          "result_dtype": "uint8"})
    label = nib.load(label_file)
    assert label.shape == array.shape and np.allclose(label.affine, affine, atol=1e-4)
    assert label.get_data_dtype() == np.uint8
    os.remove(label_file)


def test_a_click_always_changes_the_mask_where_it_was_placed(starter_checkpoint, image_path):
    predictor = InteractivePredictor(ModelStore(starter_checkpoint))
    volume = load_model_volume(str(image_path), 1.5)
    noise_voxel, box_voxel = [8, 70, 8], [45, 35, 30]  # in the noise far from the bright box, and inside it
    first = predictor.segment(volume, volume_clicks(volume, [noise_voxel]), np.zeros((0, 3)), follow_border=False)
    assert predictor.to_original_mask(volume, first)[tuple(noise_voxel)]
    both = volume_clicks(volume, [noise_voxel, box_voxel])
    second = predictor.segment(volume, both[:1], both[1:], previous=first, follow_border=False)
    mask = predictor.to_original_mask(volume, second)
    assert mask[tuple(noise_voxel)] and not mask[tuple(box_voxel)]


@pytest.mark.parametrize("where", ["inside", "at the border", "nowhere", "everywhere"])
def test_upsampling_only_around_positive_logits_thresholds_the_same(where):
    rng = np.random.default_rng(1)
    logits = torch.as_tensor(-rng.random((1, 1, 16, 16, 16)) * 5.0, dtype=torch.float32)
    if where == "inside":
        logits[..., 5:8, 6:9, 7:11] = torch.as_tensor(rng.normal(1.0, 2.0, (3, 3, 4)), dtype=torch.float32)
    elif where == "at the border":
        logits[..., :3, 13:, 4:6] = 3.0
    elif where == "everywhere":
        logits = logits + 4.0
    crop = Crop(origin=(0.0, 0.0, 0.0), size=64)
    full = torch.nn.functional.interpolate(logits, size=(64,) * 3, mode="trilinear", align_corners=False)
    fast = upsampled_output(logits, crop, positive_only=True)
    assert torch.equal(fast > 0, full > 0)
    assert (full > 0).any() == (where != "nowhere")


def test_a_follow_up_inside_the_fine_crop_keeps_the_coarse_pass_and_the_same_mask():
    """The served starter on white matter, which reaches the fine crop's faces: every prediction has a coarse pass.
    A click inside the fine crop keeps the previous coarse pass (not decoded again) and pastes only the fine pass
    onto the previous mask, which gives the mask of pasting both passes; a click outside it decodes the coarse pass
    again."""
    import dataclasses

    from lib.prompts.simulation import first_click
    from tests.server import REPO_ROOT, SAMPLE, ensure_sample

    studies = ensure_sample(SAMPLE) / "studies"
    volume = load_model_volume(str(studies / "subj_000.nii.gz"), 1.5)
    target = np.asarray(nib.load(studies / "labels" / "final" / "subj_000.nii.gz").dataobj) == 1
    predictor = InteractivePredictor(ModelStore(REPO_ROOT / "model" / "starter.pt"))
    a = first_click(target)
    near = np.argwhere(target)[np.argmin(np.abs(np.linalg.norm(np.argwhere(target) - a, axis=1) - 8.0))]
    first = predictor.segment(volume, volume_clicks(volume, [a]), np.zeros((0, 3)), label="white_matter")
    predictor.to_original_mask(volume, first)
    assert len(first.passes) == 2 and first.grid_mask is not None

    def both_passes(segmentation):  # the mask pasted from scratch
        return predictor.to_original_mask(volume, dataclasses.replace(segmentation, base_mask=None))

    second = predictor.segment(volume, volume_clicks(volume, [a, near]), np.zeros((0, 3)), previous=first,
                               label="white_matter")
    assert second.fine.crop == first.fine.crop and second.passes[0] is first.passes[0]
    expected = both_passes(second)
    assert torch.equal(predictor.to_original_mask(volume, second), expected)

    corner = volume_clicks(volume, [[2, 2, 2]])
    assert not second.fine.crop.contains(corner)
    third = predictor.segment(volume, volume_clicks(volume, [a, near]), corner, previous=second,
                              label="white_matter")
    assert len(third.passes) == 2 and third.passes[0] is not second.passes[0]
    assert third.base_mask is None and torch.equal(predictor.to_original_mask(volume, third), both_passes(third))
