"""Class-agnostic pretraining parts: object sources, head tissue, appearance, crops, resumable training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.data.head import add_head_tissue, brain_mask
from lib.prompts.geometry import place_crop
from lib.training.appearance import AppearanceRandomizer, remap_intensities
from lib.training.object_crops import ObjectCropSampler, inside_volume, make_volume, with_head_tissue
from lib.training.objects import OBJECT_SOURCES, CropContext

SIZE = 64


def phantom(shape=(70, 80, 70)) -> np.ndarray:
    """A skull-stripped head-like phantom: an ellipsoidal 'brain' with a brighter inner core and a dark cavity."""
    grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"), axis=-1)
    r = np.sqrt(((grid / np.asarray([22.0, 26.0, 22.0])) ** 2).sum(-1))
    image = np.where(r < 1.0, 0.6, 0.0) + np.where(r < 0.6, 0.4, 0.0)
    image[np.sqrt(((grid - [0, 8, 0]) ** 2).sum(-1)) < 5] = 0.1
    return (image + np.random.default_rng(0).normal(0, 0.02, shape)).astype(np.float32)


@pytest.fixture(scope="module")
def volume():
    image = phantom()
    grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in image.shape], indexing="ij"), -1)
    core = torch.from_numpy(np.sqrt(((grid / [13.2, 15.6, 13.2]) ** 2).sum(-1)) < 1)
    z = (image - image.mean()) / image.std()
    return make_volume("phantom", torch.from_numpy(z[None]), {"core": core})


def test_every_source_is_registered_and_gives_a_mask_on_the_crop(volume):
    assert {"anatomy", "supervoxels", "components", "blobs", "tubes"} <= set(OBJECT_SOURCES)
    rng = np.random.default_rng(0)
    crop = place_crop(np.asarray([35.0, 40.0, 35.0]), (70, 80, 70), size=SIZE)
    image = volume.image[:, 3:67, 8:72, 3:67].clone()
    for name, source in OBJECT_SOURCES.items():
        masks = []
        for _ in range(5):
            context = CropContext(image, lambda: {"core": volume.anatomy["core"][3:67, 8:72, 3:67]},
                                  inside_volume(crop, (70, 80, 70)))
            sample = source(context, rng)
            if sample is not None:
                assert sample.mask.shape == (SIZE,) * 3 and sample.mask.dtype == torch.bool
                assert sample.image.shape == (1, SIZE, SIZE, SIZE)
                masks.append(int(sample.mask.sum()))
        assert any(m > 0 for m in masks), name


def test_painted_objects_have_their_own_contrast(volume):
    rng = np.random.default_rng(1)
    image = volume.image[:, 3:67, 8:72, 3:67].clone()
    crop = place_crop(np.asarray([35.0, 40.0, 35.0]), (70, 80, 70), size=SIZE)
    for _ in range(5):
        sample = OBJECT_SOURCES["blobs"](CropContext(image, dict, inside_volume(crop, (70, 80, 70))), rng)
        inside = sample.mask.numpy()
        changed = np.abs(sample.image[0].numpy() - image[0].numpy())[inside]
        assert changed.mean() > 0.3 * float(image.std())


def test_head_tissue_surrounds_the_brain_and_leaves_it_unchanged():
    image = np.pad(phantom(), 15)
    brain = brain_mask(image)
    head = add_head_tissue(image, (1.0, 1.0, 1.0), np.random.default_rng(0))
    assert head.dtype == image.dtype and head.shape == image.shape
    assert np.array_equal(head[brain], image[brain])
    from scipy import ndimage
    shell = ndimage.binary_dilation(brain, iterations=8) & ~ndimage.binary_dilation(brain, iterations=2)
    assert np.abs(head[shell] - image[shell]).mean() > 0.05  # scalp and skull painted where there was air
    far = ~ndimage.binary_dilation(brain, iterations=25)
    assert np.array_equal(head[far], image[far])  # nothing beyond the scalp


def test_head_tissue_on_integer_images_keeps_the_type():
    image = (np.pad(phantom(), 15) * 1000).astype(np.int16)
    assert add_head_tissue(image, (1.2, 1.2, 1.2), np.random.default_rng(0)).dtype == np.int16


def test_appearance_changes_values_and_keeps_the_crop_statistics():
    rng = np.random.default_rng(0)
    crop = torch.from_numpy(phantom()[None, :64, :64, :64])
    randomize = AppearanceRandomizer()
    for _ in range(5):
        out = randomize(crop, rng)
        assert out.shape == crop.shape and type(out) is torch.Tensor
        assert abs(float(out.mean() - crop.mean())) < 0.2 * float(crop.std()) + 1e-3
    remapped = remap_intensities(crop, rng)
    assert not torch.equal(remapped, crop)


def test_sampler_draws_bounded_objects_with_and_without_head_tissue(volume):
    rng = np.random.default_rng(0)
    head = with_head_tissue(volume, 1.5, rng)
    assert head.image.shape[1] > volume.image.shape[1] and head.anatomy["core"].shape == head.image.shape[1:]
    sampler = ObjectCropSampler([volume, head], SIZE)
    for _ in range(6):
        image, target, source = sampler(rng)
        assert image.shape == target.shape == (1, 1, SIZE, SIZE, SIZE) and source in OBJECT_SOURCES
        assert 0 < int(target.sum()) <= 0.5 * SIZE**3


def test_inside_volume_matches_the_crop_mapping():
    crop = place_crop(np.asarray([5.0, 40.0, 35.0]), (70, 80, 70), size=SIZE, zoom=2.0)
    low, high = inside_volume(crop, (70, 80, 70))
    mapped = crop.crop_to_volume[:3, :3].diagonal() * np.stack([low, high]) + crop.crop_to_volume[:3, 3]
    assert (mapped[0] >= -0.5).all() and (mapped[1] <= np.asarray([70, 80, 70]) - 0.5).all()
