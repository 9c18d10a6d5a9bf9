"""The starter's mask refiner, auto-zoom's rule, and pretraining that continues from its saved state."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from lib.engine.autozoom import MIN_ZOOM, ZOOM_LADDER
from lib.engine.predictor import InteractivePredictor
from lib.model import VARIANTS, build_sam3d, load_sam3d
from lib.model.mask_refiner import MaskRefiner3D
from lib.prompts.geometry import apply_affine, original_to_volume
from lib.prompts.simulation import simulated_click_loss
from lib.training.object_crops import ObjectCropSampler, make_volume
from lib.training.pretrain import train
from lib.transforms.preprocess import load_model_volume
from tests.conftest import lps_anisotropic_affine, write_nifti
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


class BrightObjectModel:
    """A stand-in network for auto-zoom's geometry: it segments whatever is bright in the crop it is shown."""

    img_size = 128
    mask_refiner = None

    def answers_with_three_masks(self, foreground: int, background: int, has_mask_prompt: bool) -> bool:
        return False

    def parameters(self):
        yield torch.zeros(1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(image, 4)

    def decode(self, embedding, points, labels, mask_logits=None, multimask_output=False):
        return 10.0 * (embedding - 0.5), torch.ones(1, 1)


@pytest.mark.parametrize(("radius_mm", "zoom"), [(8.0, MIN_ZOOM), (40.0, 2.0 / 3.0), (80.0, 1.0)])
def test_auto_zoom_starts_zoomed_in_and_zooms_out_while_the_mask_reaches_the_crop(tmp_path, radius_mm, zoom):
    assert ZOOM_LADDER[0] == MIN_ZOOM
    spacing = 2.0
    grid = np.indices((110, 110, 110)).transpose(1, 2, 3, 0) * spacing
    ball = np.linalg.norm(grid - 55 * spacing, axis=-1) < radius_mm
    path = write_nifti(tmp_path / "ball.nii.gz", np.where(ball, 1000.0, 100.0).astype(np.float32),
                       lps_anisotropic_affine(spacing=(spacing,) * 3))
    volume = load_model_volume(str(path), 1.5)
    store = SimpleNamespace(get=lambda: (BrightObjectModel(), "v1"))
    predictor = InteractivePredictor(store, autozoom=True)
    click = apply_affine(original_to_volume(volume.original_affine, volume.affine), np.asarray([[55.0, 55.0, 55.0]]))
    segmentation = predictor.segment(volume, click, np.zeros((0, 3)), follow_border=False)
    assert segmentation.fine.crop.zoom == pytest.approx(zoom)
    mask = predictor.to_original_mask(volume, segmentation).numpy()
    if zoom < 1.0:  # the whole object (the stand-in's threshold widens it by the partial-volume rim)
        assert (mask & ball).sum() >= 0.95 * ball.sum() and mask.sum() < 4 * ball.sum()


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


def test_twenty_training_steps_lower_the_loss():
    torch.manual_seed(0)
    image = phantom()
    volume = make_volume("phantom", torch.from_numpy(((image - image.mean()) / image.std())[None]), {})
    rng = np.random.default_rng(0)
    crop, target, _ = ObjectCropSampler([volume], 128, {"blobs": 1.0})(rng)
    model = build_sam3d("starter")
    model.multimask_first_click = True
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    losses = []
    for _ in range(20):
        outcome = simulated_click_loss(model, crop, target, 2, DiceCELoss(sigmoid=True), rng, random_first_click=0)
        optimizer.zero_grad()
        outcome.loss.backward()
        optimizer.step()
        losses.append(outcome.loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
