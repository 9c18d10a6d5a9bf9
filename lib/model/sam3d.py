"""The 3D SAM (image encoder, prompt encoder, mask decoder) and its variants."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from lib.model.click_refiner import ClickRefiner3D, click_maps
from lib.model.fast_conv import use_fast_convolutions
from lib.model.image_encoder import ImageEncoderViT3D
from lib.model.mask_decoder import MaskDecoder3D
from lib.model.mask_refiner import MaskRefiner3D
from lib.model.prompt_encoder import PromptEncoder3D

# Architectures by variant. ``sam_med3d`` is SAM-Med3D vit_b_ori; ``fastsam3d`` its distilled 6-block student
# encoder with SAM-Med3D's prompt encoder and decoder; ``starter`` is small enough to train on a CPU and adds a
# high-resolution mask refiner (the official layouts have none). Refiner kinds: ``edges`` (``MaskRefiner3D``, the
# default), ``clicks`` (``ClickRefiner3D``, which also sees the clicks and its previous result) and ``prompts`` (the
# same with box and stroke channels).
VARIANTS: dict[str, dict[str, Any]] = {
    "sam_med3d": {
        "encoder": {"embed_dim": 768, "depth": 12, "num_heads": 12, "window_size": 14,
                    "global_attn_indexes": (2, 5, 8, 11), "out_chans": 384},
        "prompt_dim": 384, "decoder_mlp_dim": 2048,
    },
    "fastsam3d": {
        "encoder": {"embed_dim": 768, "depth": 6, "num_heads": 6, "window_size": 0, "student_skip_layers": 2,
                    "out_chans": 384},
        "prompt_dim": 384, "decoder_mlp_dim": 2048,
    },
    "starter": {
        "encoder": {"embed_dim": 192, "depth": 6, "num_heads": 6, "window_size": 0, "out_chans": 192},
        "prompt_dim": 192, "decoder_mlp_dim": 768, "refiner": "edges",
    },
}

REFINERS = {"none": lambda: None, "edges": MaskRefiner3D, "clicks": ClickRefiner3D,
            "prompts": lambda: ClickRefiner3D(prompt_channels=True)}

IMG_SIZE = 128
PATCH_SIZE = 16


def class_key(name: str | None) -> str:
    """An object name as :attr:`Sam3D.decoder_classes` holds it: ``"White Matter"`` -> ``"white_matter"``."""
    return "_".join((name or "").strip().lower().replace("-", " ").split())


class Sam3D(nn.Module):
    """Segment Anything in 3D: ``encode`` once per 128^3 crop, ``decode`` once per click.

    Points are voxel indices of the 128^3 input in its axis order (like SAM-Med3D's ``argwhere`` clicks),
    labels 1 (foreground), 0 (background), -1 (padding). Masks come back as 32^3 low-res logits.
    """

    def __init__(self, variant: str, img_size: int = IMG_SIZE, patch_size: int = PATCH_SIZE,
                 refiner: str | None = None) -> None:
        super().__init__()
        config = VARIANTS[variant]
        self.variant = variant
        self.img_size = img_size
        self.embed_size = img_size // patch_size
        self.image_encoder = ImageEncoderViT3D(img_size=img_size, patch_size=patch_size, **config["encoder"])
        self.prompt_encoder = PromptEncoder3D(
            embed_dim=config["prompt_dim"],
            image_embedding_size=(self.embed_size,) * 3,
            input_image_size=(img_size,) * 3,
        )
        self.mask_decoder = MaskDecoder3D(config["prompt_dim"], transformer_mlp_dim=config["decoder_mlp_dim"])
        kind = config.get("refiner", "none") if refiner is None else refiner
        if kind not in REFINERS:
            raise ValueError(f"unknown refiner {kind!r}; known: {sorted(REFINERS)}")
        self.mask_refiner = REFINERS[kind]()
        # a single positive click is ambiguous (a part, the structure, the organ): models trained for it answer the
        # first click with the best of the decoder's three masks by predicted IoU, as Segment Anything does
        self.multimask_first_click = False
        # objects the decoder was trained to segment on its own (pretraining targets of a refiner trained on the
        # frozen decoder, classes of published adapters): served without the refiner, as VISTA3D serves its
        # supported classes apart from zero-shot clicks
        self.decoder_classes: frozenset[str] = frozenset()

    def refines(self, label: str | None) -> bool:
        """Whether the mask refiner serves the object named ``label``: yes unless the decoder was trained on it."""
        return self.mask_refiner is not None and class_key(label) not in self.decoder_classes

    def answers_with_three_masks(self, foreground: int, background: int, has_mask_prompt: bool) -> bool:
        """Whether these prompts get the three ambiguity masks: one positive click alone, for a model trained so."""
        return self.multimask_first_click and foreground == 1 and background == 0 and not has_mask_prompt

    @property
    def low_res_size(self) -> int:
        return self.embed_size * 4

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S, S) normalised image -> (B, C, S/16, S/16, S/16) embedding."""
        return self.image_encoder(image)

    def decode(self, embedding: torch.Tensor, points: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               mask_logits: torch.Tensor | None = None,
               multimask_output: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res mask logits (B, 1 or 3, r, r, r) and predicted IoU for clicks and an optional previous mask."""
        sparse, dense = self.prompt_encoder(
            points=(points, labels) if points is not None else None, boxes=None, masks=mask_logits
        )
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    @property
    def takes_prompt_channels(self) -> bool:
        """Whether the mask refiner was built for box and stroke channels (:mod:`lib.prompts.channels`)."""
        return isinstance(self.mask_refiner, ClickRefiner3D) and self.mask_refiner.prompt_channels

    def refine(self, low_res_logits: torch.Tensor, guide: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
               previous: torch.Tensor | None = None, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at half the crop size that follow the edges of the crop (``guide``: ``MaskRefiner3D.guide``); a
        ``clicks`` refiner also sees the points and labels (as for :meth:`decode`) and its ``previous`` logits, and
        a ``prompts`` one the box and stroke channels too (``prompts``; other refiners ignore them)."""
        if self.mask_refiner is None:
            raise ValueError(f"the {self.variant} layout has no mask refiner")
        if isinstance(self.mask_refiner, ClickRefiner3D):
            return self.mask_refiner(low_res_logits, guide, click_maps(points, labels, guide.shape[-1]), previous,
                                     prompts)
        return self.mask_refiner(low_res_logits, guide)

    def forward(self, image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                mask_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.encode(image), points, labels, mask_logits)


def build_sam3d(variant: str, refiner: str | None = None) -> Sam3D:
    """A randomly initialised model of ``variant`` (``refiner``: ``edges``, ``clicks`` or ``none`` overrides the
    variant's mask refiner); its 3D convolutions run on faster CPU kernels at inference (:mod:`lib.model.fast_conv`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    return use_fast_convolutions(Sam3D(variant, refiner=refiner))
