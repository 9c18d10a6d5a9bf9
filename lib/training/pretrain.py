"""Pretrain the ``starter`` 3D SAM class-agnostically: "the region these clicks mark", on objects from every
registered source (``lib.training.objects``: anatomy, supervoxels, intensity components, painted blobs and tubes),
half of the volumes with synthetic head tissue, random appearance and zooms across the auto-zoom range.

    python -m lib.training.pretrain --data data/sample/train --out model/starter.pt --minutes 60 [--init CKPT]

``--data`` is a MONAI Label studies folder with ``labels/final``. Classes listed in ``--hold-out`` are never used as
anatomy targets, so fine-tuning and click evaluation can be measured on a class the starter has not seen. The run
saves its state (weights, optimiser, random generators, elapsed time) to ``OUT.state.pt`` every few minutes and
continues from it with ``--resume``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.utils import set_determinism

from lib.data.classes import read_class_names
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.model import Sam3D, build_sam3d, save_sam3d
from lib.model.click_refiner import widened_inputs
from lib.model.loading import unwrap_state_dict
from lib.prompts.grid_prompts import PROMPT_KINDS
from lib.prompts.simulation import simulated_click_loss
from lib.training.evaluate import click_trials, mean_dice_table
from lib.training.object_crops import (
    DEFAULT_SOURCE_WEIGHTS,
    ObjectCropSampler,
    PretrainVolume,
    make_volume,
    with_head_tissue,
)
from lib.training.studies import labeled_pairs
from lib.transforms.preprocess import load_model_label, load_model_volume

logger = logging.getLogger("pretrain")

EVAL_CLICKS = (1, 3, 5, 10)


def anatomy_targets(label: torch.Tensor, classes: dict[int, str], hold_out: set[str]) -> dict[str, torch.Tensor]:
    """Named anatomy of one label map: each class not held out, and the whole labelled brain."""
    targets = {name: label == index for index, name in classes.items() if name not in hold_out}
    kept = [i for i, n in classes.items() if n not in hold_out]
    targets["brain"] = torch.isin(label, torch.as_tensor(kept, dtype=label.dtype)) if kept else label > 0
    return {k: v for k, v in targets.items() if v.sum() > 100}


def load_training_volumes(data: Path, hold_out: set[str], head_fraction: float,
                          rng: np.random.Generator) -> list[PretrainVolume]:
    """Every labelled volume of ``data`` in model space, plus a copy with head tissue for ``head_fraction`` of them."""
    classes = read_class_names(data)
    volumes = []
    for image_path, label_path in labeled_pairs(data):
        image = load_model_volume(str(image_path), MODEL_SPACING_MM).image
        label = load_model_label(str(label_path), MODEL_SPACING_MM)
        volume = make_volume(image_path.name, image, anatomy_targets(label, classes, hold_out))
        volumes.append(volume)
        if rng.random() < head_fraction:
            volumes.append(with_head_tissue(volume, MODEL_SPACING_MM, rng))
        logger.info("loaded %s: %s anatomy %s", image_path.name, tuple(image.shape), sorted(volume.anatomy))
    return volumes


@dataclass
class TrainState:
    """What ``--resume`` continues from."""

    step: int = 0
    elapsed: float = 0.0
    per_source: dict | None = None


def save_state(path: Path, model: Sam3D, optimizer: torch.optim.Optimizer, state: TrainState,
               rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": vars(state),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def train(model: Sam3D, sampler: ObjectCropSampler, minutes: float, max_clicks: int, lr: float,
          rng: np.random.Generator, state_path: Path, resume: bool, encoder_lr_scale: float = 1.0,
          refiner_only: bool = False, save_minutes: float = 3.0,
          prompt_weights: dict[str, float] | None = None) -> dict:
    """Train until the time budget is spent (warm-up, cosine decay over training time), saving the state every
    ``save_minutes`` so an interrupted run continues where it stopped. The image encoder learns at
    ``encoder_lr_scale`` times ``lr`` (a warm-started encoder keeps its features while the decoder adapts);
    ``refiner_only`` trains the mask refiner alone, on a frozen encoder and decoder. Each step's session is of a
    prompt kind drawn with ``prompt_weights`` (:data:`PROMPT_KINDS`; default: clicks only)."""
    kinds, chances = zip(*(prompt_weights or {"clicks": 1.0}).items(), strict=True)
    chances = np.asarray(chances, dtype=np.float64) / np.sum(chances)
    if refiner_only:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("mask_refiner."))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder = [p for n, p in trainable if n.startswith("image_encoder.")]
    others = [p for n, p in trainable if not n.startswith("image_encoder.")]
    optimizer = torch.optim.AdamW([{"params": encoder, "scale": encoder_lr_scale}, {"params": others, "scale": 1.0}],
                                  lr=lr, weight_decay=0.01)
    state = TrainState(per_source={})
    if resume and state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        logger.info("resumed at step %d (%.0f s trained)", state.step, state.elapsed)
    loss_fn = DiceCELoss(sigmoid=True)
    budget = minutes * 60.0
    recent: dict[str, list] = defaultdict(list)
    model.train()
    session_start, last_save = time.perf_counter(), time.perf_counter()
    trained_before = state.elapsed
    while (elapsed := trained_before + time.perf_counter() - session_start) < budget:
        warmup = min(1.0, (state.step + 1) / 100)
        for group in optimizer.param_groups:
            group["lr"] = group["scale"] * lr * warmup * 0.5 * (1.0 + math.cos(math.pi * elapsed / budget))
        image, target, source = sampler(rng)
        prompt = kinds[int(rng.choice(len(kinds), p=chances))] if len(kinds) > 1 else kinds[0]
        outcome = simulated_click_loss(model, image, target, int(rng.integers(1, max_clicks + 1)), loss_fn, rng,
                                       train_decoder=not refiner_only, prompt=prompt)
        optimizer.zero_grad(set_to_none=True)
        outcome.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
        optimizer.step()
        for key in (source, f"prompt:{prompt}") if len(kinds) > 1 else (source,):
            recent[key].append((outcome.loss.item(), outcome.dices[0], outcome.dices[-1]))
        state.step += 1
        if state.step % 50 == 0:
            summary = {k: np.round(np.mean(v[-50:], axis=0), 3).tolist() for k, v in sorted(recent.items())}
            state.per_source = {k: {"loss": v[0], "dice_first": v[1], "dice_last": v[2]} for k, v in summary.items()}
            logger.info("step %d (%.0f s) loss/dice@1/dice@last by source %s", state.step, elapsed, summary)
        if time.perf_counter() - last_save > save_minutes * 60:
            state.elapsed = trained_before + time.perf_counter() - session_start
            save_state(state_path, model, optimizer, state, rng)
            last_save = time.perf_counter()
    state.elapsed = trained_before + time.perf_counter() - session_start
    save_state(state_path, model, optimizer, state, rng)
    model.eval()
    return {"steps": state.step, "train_seconds": round(state.elapsed, 1), "recent_by_source": state.per_source}


def initial_model(init: Path | None, refiner: str = "edges") -> tuple[Sam3D, str | None]:
    """A new starter, or one starting from ``init``'s weights (a mask refiner ``init`` lacks, or has in another
    layout, keeps its initialisation; a ``prompts`` refiner starts from a ``clicks`` one, widened); with the file's
    sha256."""
    model = build_sam3d("starter", refiner=refiner)
    if init is None:
        return model, None
    own = model.state_dict()
    state = unwrap_state_dict(torch.load(init, map_location="cpu", weights_only=False))
    if model.takes_prompt_channels:  # a click refiner grows zero-weighted box and stroke inputs
        state = widened_inputs(state)
    state = {k: v for k, v in state.items()
             if not (k.startswith("mask_refiner.") and (k not in own or own[k].shape != v.shape))}
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or any(not k.startswith("mask_refiner.") for k in missing):
        raise ValueError(f"{init} is not a starter checkpoint: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model, hashlib.sha256(init.read_bytes()).hexdigest()


def evaluate(checkpoint: Path, eval_data: Path) -> dict:
    """Dice after 1, 3, 5 and 10 simulated clicks per class on held-out volumes, through the serving predictor."""
    start = time.perf_counter()
    pairs = labeled_pairs(eval_data)
    predictor = InteractivePredictor(ModelStore(checkpoint))
    trials = list(click_trials(predictor, pairs, read_class_names(eval_data), max(EVAL_CLICKS)))
    return {"volumes": len(pairs), "dice_at_clicks": mean_dice_table(trials, EVAL_CLICKS),
            "seconds": round(time.perf_counter() - start, 1)}


def parse_weights(text: str) -> dict[str, float]:
    """``name=weight,...`` -> {name: weight}."""
    pairs = [item.split("=") for item in text.split(",") if item]
    return {name: float(weight) for name, weight in pairs}


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (without the machine-specific thread count)."""
    words = ["python -m lib.training.pretrain"]
    for key, value in vars(args).items():
        if key in {"threads", "evaluate_only", "resume"} or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        words.append(flag if value is True else f"{flag} {shown}")
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/sample/train"))
    parser.add_argument("--eval-data", type=Path, nargs="*", default=[Path("data/sample/eval")],
                        help="held-out studies folders to evaluate on (after training, or with --evaluate-only)")
    parser.add_argument("--out", type=Path, default=Path("model/starter.pt"))
    parser.add_argument("--init", type=Path, default=None, help="start from this starter checkpoint's weights")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--max-clicks", type=int, default=6)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hold-out", default="lateral_ventricles", help="comma-separated class names not trained")
    parser.add_argument("--sources", default=",".join(f"{k}={v}" for k, v in DEFAULT_SOURCE_WEIGHTS.items()),
                        help="object sources and their weights, name=weight,...")
    parser.add_argument("--head-fraction", type=float, default=0.5, help="volumes also trained with head tissue")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.state.pt")
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0, help="image encoder lr relative to --lr")
    parser.add_argument("--single-mask-first-click", action="store_true",
                        help="train the first click on the single mask output (default: best of three masks)")
    parser.add_argument("--refiner", choices=("edges", "clicks", "prompts"), default="edges",
                        help="the mask refiner: edge-guided (edges), also seeing the clicks and its last result "
                             "(clicks), and also box and stroke channels (prompts)")
    parser.add_argument("--prompts", default="clicks=1",
                        help="prompt kinds of the simulated sessions and their weights, name=weight,... (of "
                             f"{', '.join(PROMPT_KINDS)})")
    parser.add_argument("--refiner-only", action="store_true",
                        help="train only the mask refiner; the encoder and decoder stay as --init has them and keep "
                             "serving the anatomy targets on their own (the checkpoint's decoder_classes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evaluate-only", action="store_true", help="only (re)evaluate --out and update its record")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    set_determinism(args.seed)
    rng = np.random.default_rng(args.seed)
    hold_out = {n for n in args.hold_out.split(",") if n}
    record_path = args.out.with_suffix(".json")
    if args.evaluate_only:
        record = json.loads(record_path.read_text())
        for folder in args.eval_data:
            record.setdefault("evaluation", {})[str(folder)] = evaluate(args.out, folder)
            logger.info("evaluated %s on %s: %s", args.out, folder, record["evaluation"][str(folder)])
            record_path.write_text(json.dumps(record, indent=2) + "\n")
        return

    wall = time.perf_counter()
    volumes = load_training_volumes(args.data, hold_out, args.head_fraction, rng)
    weights = parse_weights(args.sources)
    model, init_sha = initial_model(args.init, args.refiner)
    model.multimask_first_click = not args.single_mask_first_click
    targets = sorted({name for volume in volumes for name in volume.anatomy})
    if args.refiner_only:  # the frozen decoder keeps serving what it was trained on; the refiner serves the rest
        model.decoder_classes = frozenset(targets)
    prompt_weights = parse_weights(args.prompts)
    unknown = set(prompt_weights) - set(PROMPT_KINDS)
    if unknown:
        parser.error(f"unknown prompt kinds {sorted(unknown)}; known: {', '.join(PROMPT_KINDS)}")
    sampler = ObjectCropSampler(volumes, model.img_size, weights)
    stats = train(model, sampler, args.minutes, args.max_clicks, args.lr, rng,
                  args.out.with_suffix(".state.pt"), args.resume, args.encoder_lr_scale, args.refiner_only,
                  prompt_weights=prompt_weights)
    record = {
        "command": command_line(args),
        "data": str(args.data),
        "training_volumes": len(volumes),
        "volumes_with_head_tissue": sum(v.name.endswith("+head") for v in volumes),
        "object_sources": weights,
        "prompt_kinds": prompt_weights,
        "anatomy_targets": targets,
        "decoder_classes": sorted(model.decoder_classes),
        "excluded": {"anatomy_classes": sorted(hold_out), "volumes": [str(f) for f in args.eval_data]},
        "initialised_from": {"path": str(args.init), "sha256": init_sha} if args.init else None,
        "seed": args.seed,
        **stats,
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "torch_threads": args.threads,
    }
    save_sam3d(model, args.out, half=True, record=record)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    for folder in args.eval_data:
        record.setdefault("evaluation", {})[str(folder)] = evaluate(args.out, folder)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    logger.info("saved %s: %s", args.out, record)


if __name__ == "__main__":
    main()
