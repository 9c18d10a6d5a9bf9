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
from lib.model import VARIANTS, Sam3D, build_sam3d, load_sam3d, save_sam3d
from lib.model.click_refiner import ClickRefiner3D, click_maps
from lib.model.mask_refiner import MaskRefiner3D
from lib.prompts.geometry import apply_affine, original_to_volume
from lib.prompts.simulation import simulated_click_loss
from lib.training.object_crops import ObjectCropSampler, make_volume
from lib.training.pretrain import train
from lib.transforms.preprocess import load_model_volume
from tests.conftest import lps_anisotropic_affine, write_nifti
from tests.test_training_objects import phantom


def test_click_maps_peak_at_each_click_on_its_own_channel_and_ignore_padding():
    points = torch.tensor([[[10.0, 20.0, 30.0], [101.0, 61.0, 5.0], [64.0, 64.0, 64.0]]])  # crop voxels
    maps = click_maps(points, torch.tensor([[1, 0, -1]]), 64)
    assert maps.shape == (1, 2, 64, 64, 64)
    # crop voxel c sits at refiner voxel (c + 0.5) / 2 - 0.5: 10 -> 4.75, 101 -> 50.25
    assert np.unravel_index(int(maps[0, 0].argmax()), (64,) * 3) == (5, 10, 15)
    assert np.unravel_index(int(maps[0, 1].argmax()), (64,) * 3) == (50, 30, 2)
    assert maps[0, 0, 32, 32, 32] < 1e-6 and maps[0, 1, 32, 32, 32] < 1e-6  # the padding point draws nothing


def test_an_untrained_edge_refiner_returns_the_upsampled_logits_and_official_layouts_have_none():
    torch.manual_seed(0)
    refiner = MaskRefiner3D()
    logits = torch.randn(1, 1, 32, 32, 32)
    guide = MaskRefiner3D.guide(torch.randn(1, 1, 128, 128, 128))
    expected = F.interpolate(logits, size=(64,) * 3, mode="trilinear", align_corners=False)
    assert torch.allclose(refiner(logits, guide), expected)
    assert VARIANTS["starter"].get("refiner") == "edges"
    assert not any(VARIANTS[v].get("refiner") for v in ("sam_med3d", "fastsam3d"))


def test_the_click_refiner_sees_the_clicks_and_its_kind_survives_saving(tmp_path):
    torch.manual_seed(0)
    model = build_sam3d("starter", refiner="clicks").eval()
    logits, guide = torch.zeros(1, 1, 32, 32, 32), MaskRefiner3D.guide(torch.randn(1, 1, 128, 128, 128))
    with torch.no_grad():
        left = model.refine(logits, guide, torch.tensor([[[30.0, 64.0, 64.0]]]), torch.tensor([[1]]))
        right = model.refine(logits, guide, torch.tensor([[[98.0, 64.0, 64.0]]]), torch.tensor([[1]]))
    assert left.shape == (1, 1, 64, 64, 64) and not torch.allclose(left, right)
    loaded = load_sam3d(save_sam3d(model, tmp_path / "clicks.pt"))
    assert isinstance(loaded.mask_refiner, ClickRefiner3D)
    assert isinstance(load_sam3d(save_sam3d(build_sam3d("starter"), tmp_path / "edges.pt")).mask_refiner,
                      MaskRefiner3D)


def test_the_decoder_serves_its_own_classes_and_the_refiner_everything_else(tmp_path):
    model = build_sam3d("starter", refiner="clicks")
    assert model.refines("white_matter") and model.refines(None)  # no decoder classes: the refiner serves all
    model.decoder_classes = frozenset({"white_matter", "brain"})
    loaded = load_sam3d(save_sam3d(model, tmp_path / "routed.pt"))
    assert loaded.decoder_classes == {"white_matter", "brain"}
    assert not loaded.refines("White Matter") and not loaded.refines(" white-matter ")
    assert loaded.refines("lesion") and loaded.refines("") and loaded.refines(None)
    assert not build_sam3d("starter", refiner="none").refines("lesion")  # nothing to refine with


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

    def refines(self, label: str | None) -> bool:
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


def twenty_step_losses(refiner: str, train_decoder: bool, lr: float) -> tuple[Sam3D, list[float]]:
    """Losses of 20 optimiser steps on one blob crop of the phantom (two clicks each), and the trained model."""
    torch.manual_seed(0)
    image = phantom()
    volume = make_volume("phantom", torch.from_numpy(((image - image.mean()) / image.std())[None]), {})
    rng = np.random.default_rng(0)
    crop, target, _ = ObjectCropSampler([volume], 128, {"blobs": 1.0})(rng)
    model = build_sam3d("starter", refiner=refiner)
    model.multimask_first_click = train_decoder
    trained = model.parameters() if train_decoder else model.mask_refiner.parameters()
    optimizer = torch.optim.AdamW(trained, lr=lr)
    losses = []
    for _ in range(20):
        outcome = simulated_click_loss(model, crop, target, 2, DiceCELoss(sigmoid=True), rng, random_first_click=0,
                                       train_decoder=train_decoder)
        optimizer.zero_grad()
        outcome.loss.backward()
        optimizer.step()
        losses.append(outcome.loss.item())
    return model, losses


def test_twenty_training_steps_lower_the_loss():
    _, losses = twenty_step_losses("edges", train_decoder=True, lr=4e-4)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_twenty_steps_of_click_refiner_training_on_a_frozen_model_lower_its_loss():
    model, losses = twenty_step_losses("clicks", train_decoder=False, lr=1e-3)
    assert not any(p.grad is not None for n, p in model.named_parameters() if not n.startswith("mask_refiner."))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05  # measured: 1.86 -> 1.76
