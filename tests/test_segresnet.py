"""The trained SegResNet baseline of bench/auto.py: it learns a bright cube, and its labels land on the stored grid."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.prompts.simulation import dice
from lib.segmentation.resample import to_original_labels
from lib.segmentation.segresnet import (
    SegResNetConfig,
    class_weights,
    model_space_pair,
    segment,
    train,
)
from lib.transforms.preprocess import load_model_label, load_model_volume

SPACING = 1.0  # in-plane the stored grid itself, so the Dice bound measures learning, not resampling


@pytest.fixture
def one_thread():
    """Tiny convolutions: one thread is faster, and several spin badly when another process holds the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cube_pair(tmp_path, seed: int = 0) -> tuple[str, str, np.ndarray]:
    """A (36, 32, 20) LPS volume, 1 x 1 x 1.5 mm: noisy tissue with a bright 12 x 12 x 8 cube labelled 1."""
    rng = np.random.default_rng(seed)
    shape = (36, 32, 20)
    image = (100.0 + 10.0 * rng.standard_normal(shape)).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[10:22, 12:24, 6:14] = 1
    image[label == 1] += 60.0
    affine = np.diag([-1.0, -1.0, 1.5, 1.0])
    affine[:3, 3] = (20.0, 10.0, -5.0)
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "img.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "lab.nii.gz"))
    return str(tmp_path / "img.nii.gz"), str(tmp_path / "lab.nii.gz"), label


def test_a_hundred_steps_learn_the_cube_and_labels_come_back_on_the_stored_grid(tmp_path, one_thread):
    image_path, label_path, truth = cube_pair(tmp_path)
    pair = model_space_pair(image_path, label_path, SPACING)
    config = SegResNetConfig(init_filters=8, crop=16, crops_per_step=2, learning_rate=3e-3, seed=0)
    trained = train([pair], classes=2, seconds=math.inf, config=config, max_steps=100)
    assert trained.steps == 100 and len(trained.losses) == 100
    assert np.mean(trained.losses[-5:]) < 0.6 * np.mean(trained.losses[:5])
    volume = load_model_volume(image_path, SPACING)
    labels = segment(trained, volume)
    assert tuple(labels.shape) == truth.shape and labels.dtype == torch.uint8
    score = dice(labels.numpy() == 1, truth == 1)
    # seeds 0-4 measured 0.94-0.99 (loss ratio 0.18-0.37); 40 steps give 0.44-0.97, untrained networks about 0.05
    assert score > 0.85, score

    untrained = train([pair], classes=2, seconds=math.inf, config=config, max_steps=0)
    assert untrained.steps == 0
    assert dice(segment(untrained, volume).numpy() == 1, truth == 1) < 0.5


def test_model_space_labels_map_back_exactly_when_the_spacing_matches(tmp_path):
    image_path, label_path, truth = cube_pair(tmp_path)
    truth = truth.copy()
    truth[0:3, 0:2, 0:1] = 2  # a corner class, to catch flipped axes
    affine = nib.load(label_path).affine
    nib.save(nib.Nifti1Image(truth, affine), str(tmp_path / "lab2.nii.gz"))
    volume = load_model_volume(image_path, SPACING)  # x and y only flip, z is resampled from 1.5 mm
    model_label = load_model_label(str(tmp_path / "lab2.nii.gz"), SPACING)
    assert tuple(model_label.shape[:2]) == truth.shape[:2]
    back = to_original_labels(volume, model_label)
    assert tuple(back.shape) == truth.shape
    assert np.array_equal(back.numpy(), truth)


def test_rare_classes_weigh_up_to_ten_times_and_common_ones_once():
    # the sample's voxel counts: background, white matter, grey matter, lateral ventricles; a class without voxels
    weights = class_weights([6_583_077, 547_921, 939_427, 12_715, 0]).tolist()
    assert weights[0] == 1.0 and weights[2] == 1.0 and weights[4] == 1.0
    assert 1.0 < weights[1] < 2.0 and weights[3] == 10.0
    assert class_weights([0, 0]).tolist() == [1.0, 1.0]
