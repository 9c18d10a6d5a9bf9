"""Interactive segmentation per object kind: the 3D SAM checkpoint against a random-walker baseline, each with its
own simulated annotator.

    python -m bench.clicks --data data/sample/unseen --checkpoint model/starter.pt --out out/clicks.json

Each click goes to the most interior voxel of the largest error region of the method's own current result
(:mod:`lib.prompts.simulation`); the model gets its previous logits fed back. Reported per object kind: mean Dice
after 1 / 3 / 5 / 10 clicks, NoC@80 / 85 / 90 (clicks until Dice reaches 0.80 / 0.85 / 0.90, capped at 20) and
seconds per click. Sessions run to 10 clicks and on until Dice 0.90 or 20 clicks. ``--baseline-from`` reuses the
random-walker table of an earlier run on the same studies (its sessions do not depend on the checkpoint).

``--protocols clicks,box,lasso,scribbles`` adds prompt protocols through the infer tasks' own code. Box (table
``model_box``): the first interaction is the object's bounding box grown by ``BOX_MARGIN_VOXELS`` (as an annotator
draws Slicer's ROI); each later one is a click, sent with the box. Lasso (``model_lasso``): the same with the
object's outline on the axial slice through the first click instead of the box. Scribbles (``model_scribbles``):
each interaction is one stroke, the medial axis of the error region on the axial slice through the session's next
click (:func:`lib.prompts.gestures.stroke_through`), sent with every earlier stroke and the current result as the
label to refine, as Slicer's scribbles section sends them; a stroke took when it fixed at least half of the error
within its reach (:func:`lib.prompts.simulation.took`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import LoadImage

from bench.common import emit, machine, parser, studies_with_classes
from bench.random_walker import MARGIN_MM, random_walker_segmenter
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.infers.sam3d import Sam3DInfer
from lib.infers.sam3d_scribbles import Sam3DScribblesInfer
from lib.prompts.gestures import lasso_around, stroke_through
from lib.prompts.scribbles import Scribbles
from lib.prompts.simulation import (
    Click,
    ClickSession,
    Segmenter,
    clicks_to_reach,
    first_click,
    predictor_segmenter,
    run_session,
    split_clicks,
)
from lib.settings import MODEL_SPACING_MM
from lib.training.evaluate import labelled_objects
from lib.transforms.preprocess import ModelVolume, VolumeCache

REPORTED_CLICKS = (1, 3, 5, 10)
BOX_MARGIN_VOXELS = 2
NOC_THRESHOLDS = (0.80, 0.85, 0.90)
MAX_CLICKS = 20


def summarise(sessions: dict[str, list[ClickSession]], max_clicks: int) -> dict[str, dict]:
    """Per object kind and over kinds: mean Dice at the reported clicks, mean NoC and seconds per click."""
    reported = [n for n in REPORTED_CLICKS if n <= max_clicks]
    table: dict[str, dict] = {}
    for kind, runs in sorted(sessions.items()):
        table[kind] = {
            "dice": {str(n): round(float(np.mean([r.dices[n - 1] for r in runs])), 4) for n in reported},
            "noc": {f"{round(t * 100)}": round(float(np.mean([clicks_to_reach(r.dices, t, max_clicks) for r in runs])),
                                               2) for t in NOC_THRESHOLDS},
            "seconds_per_click": round(float(np.mean([s for r in runs for s in r.seconds])), 3),
            "objects": len(runs),
        }
    kinds = list(table.values())
    table["mean"] = {
        "dice": {n: round(float(np.mean([k["dice"][n] for k in kinds])), 4) for n in kinds[0]["dice"]},
        "noc": {t: round(float(np.mean([k["noc"][t] for k in kinds])), 2) for t in kinds[0]["noc"]},
        "seconds_per_click": round(float(np.mean([k["seconds_per_click"] for k in kinds])), 3),
    }
    return table


def falls(values: list[float], tolerance: float = 0.01) -> bool:
    """Whether a Dice curve drops by more than ``tolerance`` from one reported click count to the next."""
    return any(later < earlier - tolerance for earlier, later in zip(values, values[1:], strict=False))


def checks(model: dict[str, dict], baseline: dict[str, dict]) -> dict[str, object]:
    """The issue's targets, evaluated on this run."""
    kinds = [k for k in model if k != "mean"]
    dice = {k: model[k]["dice"] for k in kinds}
    return {
        "mean_dice_at_5": model["mean"]["dice"].get("5"),
        "mean_dice_at_10": model["mean"]["dice"].get("10"),
        "kinds_below_random_walker_at_5": [k for k in kinds if dice[k].get("5", 1) < baseline[k]["dice"].get("5", 0)],
        "kinds_where_dice_falls_with_clicks": [k for k in kinds if falls(list(dice[k].values()))],
    }


def prompt_checks(tables: dict[str, dict]) -> dict[str, object]:
    """The prompts issue's targets: the box and two clicks against five clicks, and scribbles' NoC@85 against
    clicks', per kind and on the mean (for the protocols that ran)."""
    clicks, out = tables["model"], {}
    kinds = [k for k in clicks if k != "mean"]
    if "model_box" in tables:
        box = tables["model_box"]
        out.update({
            "mean_dice_box_alone": box["mean"]["dice"].get("1"),
            "mean_dice_box_plus_2_clicks": box["mean"]["dice"].get("3"),
            "mean_dice_5_clicks": clicks["mean"]["dice"].get("5"),
            "kinds_where_box_plus_2_clicks_is_below_5_clicks": [
                k for k in kinds if box[k]["dice"].get("3", 1) < clicks[k]["dice"].get("5", 0)],
        })
    if "model_scribbles" in tables:
        scribbles = tables["model_scribbles"]
        out.update({
            "mean_noc85_scribbles": scribbles["mean"]["noc"]["85"],
            "mean_noc85_clicks": clicks["mean"]["noc"]["85"],
            "kinds_where_scribbles_need_more_interactions_for_85": [
                k for k in kinds if scribbles[k]["noc"]["85"] > clicks[k]["noc"]["85"]],
        })
    return out


def region_segmenter(task: Sam3DInfer, volume: ModelVolume, name: str, shape: tuple[int, ...],
                     params: dict[str, Any], protocol: str) -> Segmenter:
    """A region protocol's segmenter: the session's first click stands for the region prompt in ``params`` (a
    ``box`` or a ``lasso``, as a request sends it); every request sends the region and the clicks after it."""
    regions, crop_box = task.region_prompts(params, shape)
    client = f"{protocol}-{name}-{id(regions)}"

    def segment(clicks: list[Click]) -> np.ndarray:
        foreground, background = split_clicks(clicks[1:])
        mask, _ = task.segment_prompts(volume, foreground, background, regions, None, name, crop_box, client)
        return mask.numpy().astype(bool)

    return segment


def box_around(target: np.ndarray) -> list[list[int]]:
    """The box an annotator draws around the object: its bounding box grown by ``BOX_MARGIN_VOXELS``."""
    nonzero = np.argwhere(target)
    return np.stack([nonzero.min(0) - BOX_MARGIN_VOXELS, nonzero.max(0) + BOX_MARGIN_VOXELS], axis=1).tolist()


def scribble_segmenter(task: Sam3DScribblesInfer, volume: ModelVolume, name: str, target: np.ndarray) -> Segmenter:
    """The scribbles protocol's segmenter: each interaction paints :func:`stroke_through` the click the session
    just placed and sends every stroke so far over the current result, as Slicer's scribbles section exports them
    (strokes painted over the label)."""
    current = np.zeros(target.shape, dtype=bool)
    strokes = {True: np.zeros(target.shape, dtype=bool), False: np.zeros(target.shape, dtype=bool)}
    client = f"scribbles-{name}-{id(strokes)}"

    def segment(clicks: list[Click]) -> np.ndarray:
        nonlocal current
        point, is_foreground = clicks[-1]
        strokes[is_foreground] |= stroke_through(current, target, point)
        label = current & ~(strokes[True] | strokes[False])
        scribbles = Scribbles(strokes[True].copy(), strokes[False].copy(), label if label.any() else None)
        mask, _ = task.segment_scribbles(volume, scribbles, name, None, client)
        current = mask.numpy().astype(bool)
        return current

    return segment


def reused_baseline(path: Path, data: Path, volumes: int) -> dict[str, dict]:
    """The random-walker table of an earlier ``bench.clicks`` run on the same studies folder."""
    earlier = json.loads(path.read_text())
    if Path(earlier.get("data", "")) != data or earlier.get("volumes") != volumes or "random_walker" not in earlier:
        raise SystemExit(f"{path} holds no random-walker run on {data} ({volumes} volumes)")
    return earlier["random_walker"]


def main() -> None:
    p = parser(__doc__, "data/sample/eval")
    p.add_argument("--encoder-checkpoint", default=None)
    p.add_argument("--max-clicks", type=int, default=MAX_CLICKS)
    p.add_argument("--no-baseline", action="store_true", help="only the model")
    p.add_argument("--protocols", default="clicks",
                   help="comma list of clicks, box (box first, then clicks), lasso (lasso first, then clicks), "
                        "scribbles (a stroke per interaction)")
    p.add_argument("--baseline-from", type=Path, default=None,
                   help="reuse the random-walker table of an earlier run's JSON on the same --data (the baseline's "
                        "sessions do not depend on the checkpoint) instead of running it again")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pairs, classes = studies_with_classes(args.data)
    reused = reused_baseline(args.baseline_from, args.data, len(pairs)) if args.baseline_from else None
    protocols = args.protocols.split(",")
    predictor = InteractivePredictor(ModelStore(args.checkpoint, args.encoder_checkpoint))
    volumes, labels = VolumeCache(MODEL_SPACING_MM, 1 << 30), {n: i for i, n in classes.items()}
    task = Sam3DInfer(predictor, volumes, labels)
    scribbles_task = Sam3DScribblesInfer(predictor, volumes, labels)
    min_clicks = min(max(REPORTED_CLICKS), args.max_clicks)
    sessions: dict[str, dict[str, list[ClickSession]]] = {
        "model": {}, "model_box": {}, "model_lasso": {}, "model_scribbles": {}, "random_walker": {}}
    native: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for image_path, kind, volume, target in labelled_objects(pairs, classes):
        image = image_path.name
        runs = {}
        if "clicks" in protocols:
            runs["model"] = run_session(predictor_segmenter(predictor, volume, kind), target, args.max_clicks,
                                        min_clicks, 0.9)
        if "box" in protocols:  # the first click stands for the box: its centre click, which the box derives
            box = box_around(target)
            segment = region_segmenter(task, volume, kind, target.shape, {"box": box}, "box")
            runs["model_box"] = run_session(segment, target, args.max_clicks, min_clicks, 0.9,
                                            first=np.round(np.mean(box, axis=1)).astype(np.int64))
        if "lasso" in protocols:  # the first click stands for the lasso drawn on its slice
            centre = first_click(target)
            segment = region_segmenter(task, volume, kind, target.shape, {"lasso": lasso_around(target, centre)},
                                       "lasso")
            runs["model_lasso"] = run_session(segment, target, args.max_clicks, min_clicks, 0.9, first=centre)
        if "scribbles" in protocols:
            runs["model_scribbles"] = run_session(scribble_segmenter(scribbles_task, volume, kind, target), target,
                                                  args.max_clicks, min_clicks, 0.9, paints=True)
        if not args.no_baseline and reused is None:
            if image not in native:
                native = {image: (np.asarray(LoadImage(image_only=True)(str(image_path))).squeeze(),
                                  np.linalg.norm(volume.original_affine[:3, :3], axis=0))}
            runs["random_walker"] = run_session(random_walker_segmenter(*native[image]), target, args.max_clicks,
                                                min_clicks, 0.9)
        for method, session in runs.items():
            sessions[method].setdefault(kind, []).append(session)
        print(f"{image} {kind}: " + "; ".join(
            f"{m} {np.round([s.dices[n - 1] for n in REPORTED_CLICKS if n <= args.max_clicks], 3)}"
            for m, s in runs.items()), flush=True)
    tables = {m: summarise(s, args.max_clicks) for m, s in sessions.items() if s}
    if reused is not None:
        tables["random_walker"] = reused
    emit({
        "benchmark": "clicks",
        "data": str(args.data),
        "checkpoint": str(args.checkpoint),
        "volumes": len(pairs),
        "protocol": "each method has its own simulated annotator: the next click at the most interior voxel of the "
                    "largest error region of its current result; sessions to 10 clicks, then on to Dice 0.90 or "
                    f"{args.max_clicks} clicks. Random walker: native resolution, in the foreground clicks' "
                    f"bounding box grown by {MARGIN_MM:g} mm",
        **({"baseline_from": str(args.baseline_from)} if reused is not None else {}),
        **tables,
        **({"checks": checks(tables["model"], tables["random_walker"])}
           if "random_walker" in tables and "model" in tables else {}),
        **({"prompt_checks": prompt_checks(tables)} if "model" in tables and len(tables) > 2 else {}),
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
