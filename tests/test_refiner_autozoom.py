"""The starter's mask refiner, auto-zoom's rule, and pretraining that continues from its saved state."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lib.engine.autozoom import MIN_ZOOM, object_extent, zoom_for
from lib.model import VARIANTS, build_sam3d, load_sam3d
from lib.model.mask_refiner import MaskRefiner3D
from lib.training.object_crops import ObjectCropSampler, make_volume
from lib.training.pretrain import train
from tests.test_training_objects import phantom


def test_an_untrained_refiner_returns_the_upsampled_logits_and_official_layouts_have_none():
    torch.manual_seed(0)
    refiner = MaskRefiner3D()
    logits = torch.randn(1, 1, 32, 32, 32)
    guide = MaskRefiner3D.guide(torch.randn(1, 1, 128, 128, 128))
    expected = F.interpolate(logits, size=(64,) * 3, mode="trilinear", align_corners=False)
    assert torch.allclose(refiner(logits, guide), expected)
    assert VARIANTS["starter"].get("refiner")
    assert not any(VARIANTS[v].get("refiner") for v in ("sam_med3d", "fastsam3d"))


def test_a_starter_saved_before_the_refiner_loads_without_one():
    state = {k: v for k, v in build_sam3d("starter").state_dict().items() if not k.startswith("mask_refiner.")}
    model = load_sam3d({"model_state_dict": state, "variant": "starter"})
    assert model.mask_refiner is None


def test_small_objects_get_a_zoomed_in_crop_large_ones_none():
    assert zoom_for(10.0, 128) == MIN_ZOOM
    assert 0.4 < zoom_for(30.0, 128) < 0.75
    assert zoom_for(80.0, 128) is None
    logits = torch.full((1, 1, 32, 32, 32), -5.0)
    logits[0, 0, 10:14, 16:18, 16:17] = 5.0  # 4 x 2 x 1 logit cells, each 4 crop voxels
    extent, centre = object_extent(logits, 128, 0.5)
    assert extent == 4 * 4 * 0.5 and np.allclose(centre, [47.5, 67.5, 65.5])
    assert object_extent(torch.full((1, 1, 32, 32, 32), -1.0), 128, 1.0) is None


def test_pretraining_saves_its_state_and_resumes_from_it(tmp_path):
    image = phantom()
    volume = make_volume("phantom", torch.from_numpy(((image - image.mean()) / image.std())[None]), {})
    sampler = ObjectCropSampler([volume], 128, {"blobs": 1.0})
    state = tmp_path / "run.state.pt"
    model = build_sam3d("starter")
    first = train(model, sampler, 0.001, 2, 1e-4, np.random.default_rng(0), state, resume=False)
    assert state.is_file() and first["steps"] == 1
    budget = first["train_seconds"] / 60.0 + 0.001  # just past what was trained: one more step
    resumed = train(build_sam3d("starter"), sampler, budget, 2, 1e-4, np.random.default_rng(0), state, resume=True)
    assert resumed["steps"] > first["steps"] and resumed["train_seconds"] >= first["train_seconds"]
