"""Ignite iteration functions for simulated interactive training and validation of an adapted 3D SAM."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.losses import DiceCELoss

from lib.model import Sam3D
from lib.model.adapters import trainable_state
from lib.prompts.simulation import ClickOutcome, simulated_click_loss

VALIDATION_CLICKS = (1, 5)


class ClickTrainingModule(nn.Module):
    """The network a trainer sees: ``forward`` runs a simulated interaction on one crop.

    Going through ``forward`` lets DistributedDataParallel synchronise gradients. Its ``state_dict`` holds only the
    trainable tensors, so MONAI's checkpoint handlers write small files, never a copy of the frozen base.
    """

    def __init__(self, sam: Sam3D, seed: int = 0):
        super().__init__()
        self.sam = sam
        self.loss_fn = DiceCELoss(sigmoid=True)
        self.rng = np.random.default_rng(seed)

    def forward(self, image: torch.Tensor, target: torch.Tensor, num_clicks: int,
                random_first_click: float = 0.5) -> ClickOutcome:
        # the classes adapters learn join the ones the decoder serves alone (``apply_adapters``): no refiner here
        return simulated_click_loss(self.sam, image, target, num_clicks, self.loss_fn, self.rng, random_first_click,
                                    refine=False)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return trainable_state(self.sam)

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        return self.sam.load_state_dict(state_dict, strict=False)


def _unwrap(network: nn.Module) -> ClickTrainingModule:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


class ClassDifficulty:
    """Running Dice per object class during training; classes the model still gets wrong are drawn more often
    (weight ``1 - Dice``, at least ``floor``), so a class new to the base model gets most of the steps."""

    def __init__(self, momentum: float = 0.9, floor: float = 0.3):
        self.momentum = momentum
        self.floor = floor
        self.dice: dict[str, float] = {}

    def update(self, name: str, dice: float) -> None:
        previous = self.dice.get(name)
        self.dice[name] = dice if previous is None else self.momentum * previous + (1 - self.momentum) * dice

    def weights(self) -> dict[str, float]:
        return {name: max(self.floor, 1.0 - d) for name, d in self.dice.items()}


class ClickTrainingStep:
    """One iteration over a batch of crops: per crop a simulated interaction (1 to ``max_clicks`` clicks) and one
    optimiser step (as in pretraining: many small steps learn a new class faster than few averaged ones)."""

    def __init__(self, max_clicks: int, seed: int = 0, difficulty: ClassDifficulty | None = None):
        self.max_clicks = max_clicks
        self.rng = np.random.default_rng(seed)
        self.difficulty = difficulty
        self.steps = 0

    def __call__(self, engine: Any, batch: dict[str, Any]) -> dict[str, Any]:
        network = engine.network
        network.train()
        images = batch["image"].to(engine.state.device)
        targets = batch["label"].to(engine.state.device)
        trainable = [p for p in network.parameters() if p.requires_grad]
        predictions, half_targets, losses = [], [], []
        for i in range(images.shape[0]):
            engine.optimizer.zero_grad(set_to_none=True)
            outcome = network(images[i : i + 1], targets[i : i + 1], int(self.rng.integers(1, self.max_clicks + 1)))
            outcome.loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            engine.optimizer.step()
            self.steps += 1
            if self.difficulty is not None:
                self.difficulty.update(batch["object"][i], outcome.dices[-1])
            losses.append(outcome.loss.detach())
            predictions.append(outcome.predictions[-1].float())
            half_targets.append(outcome.target)
        return {
            "image": images,
            "label": torch.cat(half_targets),
            "pred": torch.cat(predictions),
            "loss": torch.stack(losses).mean(),
        }


class ClickValidationStep:
    """Dice after 1 and 5 clicks (first click in the object's interior, then the largest error) per crop."""

    def __call__(self, engine: Any, batch: dict[str, Any]) -> dict[str, Any]:
        module = _unwrap(engine.network)
        module.eval()
        images = batch["image"].to(engine.state.device)
        targets = batch["label"].to(engine.state.device)
        out: dict[str, list[torch.Tensor]] = {f"pred_{n}": [] for n in VALIDATION_CLICKS} | {"label": []}
        with torch.no_grad():
            for i in range(images.shape[0]):
                outcome = module(images[i : i + 1], targets[i : i + 1], max(VALIDATION_CLICKS), random_first_click=0)
                for n in VALIDATION_CLICKS:
                    out[f"pred_{n}"].append(outcome.predictions[min(n, len(outcome.predictions)) - 1].float())
                out["label"].append(outcome.target)
        return {"image": images} | {k: torch.cat(v) for k, v in out.items()}
