"""Spatial adapters: start identical to the base, leave base keys alone, train only what they should."""

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from lib.model import build_sam3d
from lib.model.adapters import add_adapters, set_trainable, trainable_state
from lib.prompts.simulation import simulated_click_loss
from lib.trainers.click_steps import ClickTrainingModule


def test_adapted_model_starts_identical_and_keeps_base_keys():
    torch.manual_seed(0)
    model = build_sam3d("starter").eval()
    base_keys = set(model.state_dict())
    image = torch.randn(1, 1, 128, 128, 128)
    with torch.no_grad():
        before = model.encode(image)
        add_adapters(model)
        after = model.encode(image)
    assert torch.equal(before, after)
    added = set(model.state_dict()) - base_keys
    assert base_keys <= set(model.state_dict()) and added and all(".adapters." in k for k in added)


def test_only_adapters_norms_prompt_encoder_and_decoder_learn():
    torch.manual_seed(0)
    model = add_adapters(build_sam3d("starter"))
    count = set_trainable(model)
    assert count == sum(v.numel() for v in trainable_state(model).values())
    embedding = model.encode(torch.randn(1, 1, 128, 128, 128))
    logits, _ = model.decode(embedding, torch.tensor([[[64.0, 64.0, 64.0]]]), torch.tensor([[1]]))
    logits.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["image_encoder.blocks.0.attn.qkv.weight"] is None  # frozen base encoder
    assert grads["image_encoder.patch_embed.proj.weight"] is None
    assert grads["image_encoder.adapters.0.up.weight"].abs().sum() > 0
    assert grads["mask_decoder.iou_token.weight"] is not None
    assert grads["image_encoder.blocks.0.norm1.weight"] is not None


@pytest.mark.parametrize("variant", ["starter", "fastsam3d", "sam_med3d"])
def test_trainable_parameters_are_a_small_fraction(variant):
    model = add_adapters(build_sam3d(variant))
    trainable = set_trainable(model, prompt_encoder=False, mask_decoder=False)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable < 0.05 * total


def test_adapter_training_sessions_never_run_the_click_refiner():
    """Classes the adapters learn join those the decoder serves alone, so the trainer's simulated sessions must train
    and validate the decoder's masks, never the click refiner's."""
    torch.manual_seed(0)
    model = add_adapters(build_sam3d("starter", refiner="clicks"))
    set_trainable(model)
    calls: list[int] = []
    model.mask_refiner.register_forward_hook(lambda *_: calls.append(1))
    image = torch.randn(1, 1, 128, 128, 128)
    target = torch.zeros(1, 1, 128, 128, 128)
    target[..., 40:90, 40:90, 40:90] = 1.0
    outcome = ClickTrainingModule(model)(image, target, 2)
    outcome.loss.backward()
    assert len(outcome.dices) == 2 and not calls
    with torch.no_grad():  # the same session on the refiner's route does call it: the hook would have seen it
        simulated_click_loss(model, image, target, 1, DiceCELoss(sigmoid=True), np.random.default_rng(0))
    assert calls
