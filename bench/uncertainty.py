"""Does the uncertainty predict the automatic result's error? Per-volume scores against 1 - Dice, voxel maps against
the voxels the automatic result gets wrong.

    python -m bench.uncertainty --data data/sample/studies --truth data/sample/studies_gt --out out/uncertainty.json

Prototypes come from the labelled volumes of ``--data`` (all of them, or the first ``--labelled k``); every other
volume of ``--data`` with ground truth (``labels/final``, then ``--truth``) is a pool volume. On each: the automatic
``protosam3d`` result (its Dice per class) and ``--samples`` jittered predictions drawn as ``sam3d_uncertainty``
draws them. From these:

- class scores: ``existing`` (the served score's per-class part: mean entropy where the mean jittered probability
  exceeds 0.05), ``foreground_entropy`` (mean entropy over the automatic result's voxels of the class),
  ``expected_error`` (1 - soft Dice between the samples' mean class probability and the automatic mask: the
  result's 1 - Dice if the samples were right), ``disagreement`` (1 - mean Dice between each sample's mask and the
  automatic mask), ``prompt_doubt`` (1 - mean prototype probability of the cells the prompts came from). Volume
  scores: the served score, and per class score its mean and max over classes and ``rank`` (class-stratified: the
  mean over classes of the volume's rank among the pool volumes by that class's score). Reported: Spearman rho of
  volume scores against 1 - mean Dice, and of class scores against 1 - class Dice.
- voxel maps: ``entropy`` (the served map: max over classes of the binary entropy of the mean jittered
  probability), ``predictive_entropy`` (entropy of the samples' mean class distribution over background and
  classes, softmax over (0, logits)), the same with the automatic prediction as one more member,
  ``error_probability`` (1 - the mean probability the samples give the automatic label), ``auto_margin`` (1 - the gap
  between the automatic result's two most probable labels), ``disagreement`` (fraction of samples whose label
  differs). Reported: AUROC for the voxels whose automatic label differs from the truth, inside the image's
  foreground (the primary region), near the labels (predicted or true foreground dilated by ``--near`` voxels) and
  over all voxels; per volume, then mean / min / max.
- ``intensity_check``, a model-free reference, not an uncertainty: P(class | intensity) from a histogram of the
  prototype sources' z-scored intensities per label value; its class score is ``expected_error`` with these
  probabilities, its map 1 - P(automatic label | intensity). It says how predictable the errors are at all.
- picks: the mean 1 - Dice of the first ``--batch`` volumes by top-k and, averaged over ``--draws`` orders, by
  power-noised sampling (probability proportional to score ** ``--beta``, lib/activelearning/sampling.py).
- ``served_with_head`` (``--head-minutes M``): the same labelled volumes given to the app itself (a temporary
  studies folder), its ``segmentation`` trainer run for M minutes, then per pool volume ``protosam3d``'s automatic
  result and its served uncertainty (``uncertainty: true``: the head's probabilities where the head serves): the
  score's Spearman rho against 1 - mean Dice, per class, and the map's AUROC, as above; side by side, the class
  scores with the loss's class weights left in the probabilities (``weighted_class_scores``, as served before).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage, stats

from bench.active_learning import pool_truth
from bench.auto import build_bank
from bench.common import (
    REPO_ROOT,
    app_on_studies,
    app_result,
    emit,
    machine,
    parser,
    studies_with_classes,
    work_folder,
)
from lib.activelearning.sampling import power_noised_order
from lib.data.head import brain_mask
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.prompts.simulation import dice
from lib.prototypes.auto import class_logits, segment_automatically
from lib.prototypes.features import cover_crops
from lib.scoring.uncertainty import (
    binary_entropy,
    jittered_probabilities,
    normalised_entropy,
    soft_dice_error,
    summarise,
)
from lib.segmentation.head import SegmentationHead
from lib.segmentation.resample import to_original_probabilities
from lib.training.studies import IMAGE_SUFFIXES, image_id
from lib.transforms.preprocess import ModelVolume, load_model_volume

logger = logging.getLogger("uncertainty")
MODEL_SCORES = ("foreground_entropy", "expected_error", "disagreement", "prompt_doubt")
REFERENCE = "intensity_check"
CLASS_SCORES = ("existing", *MODEL_SCORES, REFERENCE)
AGGREGATES = ("mean", "max", "rank")
MODEL_MAPS = ("entropy", "predictive_entropy", "predictive_entropy_with_auto", "error_probability", "auto_margin",
              "disagreement")
REGIONS = {
    "image_foreground": "the image's largest bright component, holes filled (lib.data.head.brain_mask): the brain "
                        "in skull-stripped images such as the sample's, the head otherwise",
    "near_labels": "predicted or true foreground, dilated by --near voxels (6-connected steps)",
    "all": "every voxel of the stored image",
}
PRIMARY = "image_foreground"
MISSING = 1.0  # class score of the class-stratified variants when the automatic result lacks the class
INTENSITY_BINS = np.linspace(-4.0, 4.0, 161)  # z-scores
TARGETS = {"volume_spearman_rho": 0.5, "voxel_auroc": 0.8}


def auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for ``positives``: the chance a positive scores above a negative, ties
    counting one half (Mann-Whitney U); None when either group is empty."""
    scores, positives = np.asarray(scores).ravel(), np.asarray(positives, dtype=bool).ravel()
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(scores[order]) != 0])  # first index of each group of equal scores
    pos = np.add.reduceat(positives[order].astype(np.int64), starts)
    neg = np.diff(np.r_[starts, positives.size]) - pos
    below = np.cumsum(neg) - neg  # negatives scoring strictly lower than each group
    return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


def spearman(x, y) -> dict[str, float | None]:
    """Spearman rho and its two-sided p-value; None where either side is constant or there are fewer than 3."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None}
    result = stats.spearmanr(x, y)
    return {"rho": round(float(result.statistic), 3), "p": round(float(result.pvalue), 4)}


def categorical(logits: list[torch.Tensor]) -> torch.Tensor:
    """(1 + classes, ...) distribution over background and classes: softmax over (0, class logits), whose arg-max
    is the automatic result's rule (a class where its logit is positive and highest)."""
    return torch.softmax(torch.stack([torch.zeros_like(logits[0])] + logits), dim=0)


def z_scores(image: np.ndarray) -> np.ndarray:
    """Intensities z-scored over the voxels above 0 (as the model's preprocessing does)."""
    out = np.zeros(image.shape, np.float32)
    inside = image > 0
    if inside.any():
        out[inside] = (image[inside] - image[inside].mean()) / max(float(image[inside].std()), 1e-6)
    return out


class IntensityCheck:
    """P(label value | z-scored intensity) from labelled volumes: a histogram per value (add-one smoothed), the
    values' frequencies in those labels as priors."""

    def __init__(self, pairs: list[tuple[Path, Path]], values: list[int]):
        counts = np.zeros((len(values), len(INTENSITY_BINS) + 1))
        for image, label in pairs:
            bins = np.digitize(z_scores(np.asarray(nib.load(str(image)).dataobj, dtype=np.float32)), INTENSITY_BINS)
            truth = np.asarray(nib.load(str(label)).dataobj)
            for row, value in enumerate(values):
                counts[row] += np.bincount(bins[truth == value], minlength=counts.shape[1])
        self.posterior = torch.from_numpy(((counts + 1) / (counts + 1).sum(0)).astype(np.float32))

    def probabilities(self, image: np.ndarray) -> torch.Tensor:
        """(values, ...) per voxel of ``image`` (the stored intensities)."""
        bins = torch.from_numpy(np.digitize(z_scores(image), INTENSITY_BINS))
        return self.posterior[:, bins]


@dataclass
class Predictions:
    """What the model says about one volume, on the stored image's grid."""

    label: torch.Tensor  # the automatic result (uint8 class values)
    found: dict[str, dict]  # its prompts per found class
    q_auto: torch.Tensor  # (1 + classes, ...) the automatic result's class distribution
    mean_q: torch.Tensor  # ... the jittered samples' mean class distribution
    mean_p: dict[str, torch.Tensor]  # the jittered samples' mean foreground probability per class (as served)
    sample_labels: list[torch.Tensor]  # each jittered sample's label map


def forget_prompted_crops(predictor: InteractivePredictor, volume: ModelVolume) -> None:
    """Drop the volume's cached embeddings except the cover crops' (each automatic run computes those first). The
    predictor reuses any cached crop that holds a class's clicks, so without this every run here would depend on
    the runs before it, and the served score would not be the one the scoring computes."""
    keep = set(cover_crops(tuple(volume.image.shape[1:]), predictor.model()[0].img_size))
    predictor.embeddings.discard(lambda key: key[0] == volume.source and key[1] not in keep)


def predict(predictor: InteractivePredictor, volume: ModelVolume, prototypes: dict[str, torch.Tensor],
            background: torch.Tensor, indices: dict[str, int], samples: int, seed: int) -> Predictions:
    """The automatic result and ``samples`` jittered predictions, as ``sam3d_uncertainty`` draws them; each as if
    it were the first run on the volume."""
    names = list(prototypes)
    values = torch.tensor([0] + [indices[n] for n in names], dtype=torch.uint8)
    forget_prompted_crops(predictor, volume)
    auto = segment_automatically(predictor, volume, prototypes, background, indices)
    forget_prompted_crops(predictor, volume)
    lowest = torch.full(volume.original_shape, -20.0)
    deterministic = {n: lowest if logits is None else logits for n, logits, _ in
                     class_logits(predictor, volume, prototypes, background)}
    q_auto = categorical([deterministic[n] for n in names])
    del deterministic
    forget_prompted_crops(predictor, volume)
    mean_p: dict[str, torch.Tensor] = {}
    mean_q = torch.zeros_like(q_auto)
    sample_labels, current = [], {}
    for _, name, probability in jittered_probabilities(predictor, volume, prototypes, background, samples, seed):
        mean_p[name] = mean_p.get(name, 0) + probability / samples
        current[name] = probability
        if len(current) == len(names):
            q = categorical([torch.logit(current[n], eps=1e-6) for n in names])
            mean_q += q / samples
            sample_labels.append(values[torch.argmax(q, dim=0)])
            current = {}
    return Predictions(auto.label, auto.found, q_auto, mean_q, mean_p, sample_labels)


def evaluate(pred: Predictions, truth: np.ndarray, stored: np.ndarray, indices: dict[str, int], near: int,
             check: IntensityCheck) -> dict:
    """Dice, class scores and map AUROCs of one pool volume (``stored``: the image's stored intensities)."""
    names = list(pred.mean_p)
    label = pred.label
    samples = len(pred.sample_labels)
    masks = {n: label == indices[n] for n in names}
    found = {n: bool(masks[n].any()) for n in names}
    rows = torch.zeros(256, dtype=torch.long)
    rows[[indices[n] for n in names]] = torch.arange(1, len(names) + 1)
    auto_rows = rows[label.long()][None]
    served = summarise(pred.mean_p, tuple(label.shape))
    q_check = check.probabilities(stored)
    class_dice = {n: dice(masks[n], truth == indices[n]) for n in names}

    def per_class(score) -> dict[str, float]:
        return {n: float(score(row, masks[n])) if found[n] else MISSING for row, n in enumerate(names, start=1)}

    scores = {
        "existing": dict(served.per_class),
        "foreground_entropy": per_class(lambda row, mask: binary_entropy(pred.mean_p[names[row - 1]])[mask].mean()),
        "expected_error": per_class(lambda row, mask: soft_dice_error(pred.mean_q[row], mask.float())),
        "disagreement": per_class(lambda row, mask: 1.0 - np.mean([dice(s == indices[names[row - 1]], mask)
                                                                   for s in pred.sample_labels])),
        "prompt_doubt": per_class(lambda row, mask: 1.0 - pred.found[names[row - 1]]["confidence"]),
        REFERENCE: per_class(lambda row, mask: soft_dice_error(q_check[row], mask.float())),
    }
    top2 = torch.topk(pred.q_auto, 2, dim=0).values
    maps = {
        "entropy": served.voxels,
        "predictive_entropy": normalised_entropy(pred.mean_q),
        "predictive_entropy_with_auto": normalised_entropy((pred.mean_q * samples + pred.q_auto) / (samples + 1)),
        "error_probability": 1.0 - torch.gather(pred.mean_q, 0, auto_rows)[0],
        "auto_margin": 1.0 - (top2[0] - top2[1]),
        "disagreement": torch.stack([(s != label).float() for s in pred.sample_labels]).mean(0),
        REFERENCE: 1.0 - torch.gather(q_check, 0, auto_rows)[0],
    }
    errors = label.numpy() != truth
    regions = error_regions(label.numpy(), truth, stored, near)
    aurocs = {name: {r: _round(auroc(m.numpy()[inside], errors[inside])) for r, inside in regions.items()}
              for name, m in maps.items()}
    return {
        "dice": {**{n: round(v, 4) for n, v in class_dice.items()},
                 "mean": round(float(np.mean(list(class_dice.values()))), 4)},
        "missing": [n for n in names if not found[n]],
        "scores": {k: {n: round(v, 4) for n, v in per.items()} for k, per in scores.items()},
        "served_score": served.score,
        "error_fraction": {r: round(float(errors[inside].mean()), 4) for r, inside in regions.items()},
        "region_fraction": {r: round(float(inside.mean()), 4) for r, inside in regions.items()},
        "auroc": aurocs,
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def volume_scores(results: dict[str, dict], names: list[str]) -> dict[str, dict[str, float]]:
    """Per volume: the served score, and mean / max / class-stratified rank over classes of each class score."""
    ids = sorted(results)
    out = {i: {"existing": results[i]["served_score"]} for i in ids}
    for variant in CLASS_SCORES[1:]:
        table = np.array([[results[i]["scores"][variant][n] for n in names] for i in ids])
        ranks = np.stack([stats.rankdata(column) for column in table.T], axis=1)
        rank = (ranks.mean(1) - 1) / max(len(ids) - 1, 1)
        for row, i in enumerate(ids):
            out[i].update({f"{variant}_mean": round(float(table[row].mean()), 4),
                           f"{variant}_max": round(float(table[row].max()), 4),
                           f"{variant}_rank": round(float(rank[row]), 4)})
    return out


def batch_errors(scores: list[float], errors: list[float], batch: int, beta: float, draws: int, seed: int) -> dict:
    """Mean error (1 - Dice) of the first ``batch`` volumes picked by top-k and, on average, by power-noised order."""
    errors_array = np.asarray(errors)
    top = np.argsort(-np.asarray(scores), kind="stable")[:batch]
    rng = np.random.default_rng(seed)
    sampled = [errors_array[power_noised_order(scores, beta, rng)[:batch]].mean() for _ in range(draws)]
    return {"top_k": round(float(errors_array[top].mean()), 4), "power_noised": round(float(np.mean(sampled)), 4)}


def summary_of(values: list[float | None]) -> dict[str, float] | None:
    found = [v for v in values if v is not None]
    if not found:
        return None
    return {"mean": round(float(np.mean(found)), 4), "min": round(min(found), 4), "max": round(max(found), 4)}


def error_regions(label: np.ndarray, truth: np.ndarray, stored: np.ndarray, near: int) -> dict[str, np.ndarray]:
    """The regions AUROCs are measured in (:data:`REGIONS`)."""
    return {"image_foreground": brain_mask(stored),
            "near_labels": ndimage.binary_dilation((label > 0) | (truth > 0), iterations=near),
            "all": np.ones(label.shape, bool)}


def weighted_class_errors(head: SegmentationHead, app, path: Path, label: np.ndarray,
                          classes: dict[str, int]) -> dict[str, float]:
    """The served class scores (:func:`lib.scoring.uncertainty.head_uncertainty`) without taking the loss's class
    weights out of the head's probabilities: 1 - soft Dice between the mirror-averaged probability of each class in
    the head's channels and its mask in the automatic ``label``."""
    volume = app.protosam3d_config.runtime.volumes.get(str(path))
    probabilities = to_original_probabilities(volume, head.mirror_averaged(volume, head.probabilities(volume)))
    channels = head.metadata["channels"]
    return {name: round(soft_dice_error(probabilities[channels[name]], torch.from_numpy(label == value).float()), 4)
            for name, value in classes.items() if name in channels}


def served_with_head(sources: list[tuple[Path, Path]], pool: list[Path], truth: dict[str, Path],
                     classes: dict[int, str], checkpoint: Path, minutes: float, seed: int, samples: int,
                     near: int, batch: int) -> dict:
    """The app's own automatic result and served uncertainty on ``pool`` after its ``segmentation`` trainer ran on
    ``sources`` for ``minutes`` (see the module's doc)."""
    app = app_on_studies(work_folder("seg3d-uncertainty-"), sources, pool, classes, checkpoint)
    start = time.perf_counter()
    stats = app.train({"model": "segmentation", "max_minutes": minutes, "seed": seed})
    train_seconds = time.perf_counter() - start
    head = app.protosam3d_config.heads.load()
    rows = {}
    for path in pool:
        image = image_id(path)
        t0 = time.perf_counter()
        label, result = app_result(app, {"model": "protosam3d", "image": image})
        voxels, served = app_result(app, {"model": "protosam3d", "image": image, "uncertainty": True,
                                          "samples": samples}, np.float32)
        voxels /= 100.0
        target = np.asarray(nib.load(str(truth[image])).dataobj).astype(np.int16)
        stored = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        class_dice = {name: round(dice(label == value, target == value), 4)
                      for name, value in result["classes"].items()}
        errors = label != target
        regions = error_regions(label, target, stored, near)
        rows[image] = {"dice": {**class_dice, "mean": round(float(np.mean(list(class_dice.values()))), 4)},
                       "score": served["uncertainty"]["score"],
                       "per_class": served["uncertainty"]["per_class"],
                       "per_class_weighted": weighted_class_errors(head, app, path, label,
                                                                   result["classes"]),
                       "auroc": {r: _round(auroc(voxels[inside], errors[inside])) for r, inside in regions.items()},
                       "seconds": round(time.perf_counter() - t0, 1)}
        logger.info("%s (served, head): Dice %s, score %.4f, AUROC %s", image, rows[image]["dice"],
                    rows[image]["score"], rows[image]["auroc"][PRIMARY])
    ids = sorted(rows)
    names = list(rows[ids[0]]["per_class"])
    errors = [1.0 - rows[i]["dice"]["mean"] for i in ids]
    weighted = [float(np.mean(list(rows[i]["per_class_weighted"].values()))) for i in ids]
    return {
        "head": {"version": head.version, "sources": head.metadata["sources"],
                 "validation": stats.get("publication", {}).get("validation"),
                 "iterations": head.metadata["iterations"], "train_seconds": round(train_seconds, 1)},
        "unit": served["uncertainty"]["unit"],
        "volume_spearman": spearman([rows[i]["score"] for i in ids], errors),
        "per_class_spearman": {n: spearman([rows[i]["per_class"][n] for i in ids],
                                           [1.0 - rows[i]["dice"][n] for i in ids])["rho"] for n in names},
        "weighted_class_scores": {  # the served class scores before the prior correction, side by side
            "volume_spearman": spearman(weighted, errors),
            "per_class_spearman": {n: spearman([rows[i]["per_class_weighted"][n] for i in ids],
                                               [1.0 - rows[i]["dice"][n] for i in ids])["rho"] for n in names}},
        "voxel_auroc": {r: summary_of([rows[i]["auroc"][r] for i in ids]) for r in REGIONS},
        "one_minus_dice_range": [round(min(errors), 4), round(max(errors), 4)],
        "first_batch_error": {"random_expected": round(float(np.mean(errors)), 4),
                              "top_k": batch_errors([rows[i]["score"] for i in ids], errors, batch, 1.0, 1,
                                                    seed)["top_k"],
                              "oracle": round(float(np.sort(errors)[::-1][:batch].mean()), 4)},
        "volumes": rows,
    }


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--truth", type=Path, default=REPO_ROOT / "data" / "sample" / "studies_gt")
    p.add_argument("--labelled", type=int, default=None, help="prototypes from the first k labelled volumes (all)")
    p.add_argument("--samples", type=int, default=2, help="jittered predictions per volume (as the scoring)")
    p.add_argument("--seed", type=int, default=0, help="prompt jitter seed (the scoring uses 0)")
    p.add_argument("--near", type=int, default=3, help="dilation of the near_labels region, in voxels")
    p.add_argument("--batch", type=int, default=3, help="volumes picked at once for the top-k / power comparison")
    p.add_argument("--beta", type=float, default=1.0, help="power-noised sampling: probability ~ score ** beta")
    p.add_argument("--draws", type=int, default=2000, help="power-noised orders averaged")
    p.add_argument("--pool", type=int, default=None, help="only the first N pool volumes (a quick check)")
    p.add_argument("--head-minutes", type=float, default=0.0,
                   help="also train the app's segmentation head this long and measure what the app serves (0: not)")
    args = p.parse_args()
    if args.samples < 1:
        raise SystemExit("--samples must be at least 1")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logger.setLevel(logging.INFO)
    start = time.perf_counter()
    pairs, classes = studies_with_classes(args.data)
    sources = pairs[: args.labelled] if args.labelled else pairs
    source_ids = {image_id(image) for image, _ in sources}
    truth = pool_truth(args.data, args.truth)
    pool = [path for path in sorted(args.data.iterdir()) if path.name.endswith(IMAGE_SUFFIXES)
            and image_id(path) in truth and image_id(path) not in source_ids][: args.pool]
    if not pool:
        raise SystemExit(f"{args.data}: no unlabelled volume with ground truth (labels/final or --truth)")
    predictor = InteractivePredictor(ModelStore(args.checkpoint))
    bank = build_bank(predictor, sources, classes)
    names = bank.class_names()
    per_class, background = bank.prototypes(names)
    prototypes = dict(zip(names, per_class, strict=True))
    indices = {name: index for index, name in classes.items()}
    check = IntensityCheck(sources, [0] + [indices[n] for n in names])
    results, seconds = {}, []
    for path in pool:
        t0 = time.perf_counter()
        volume = load_model_volume(str(path), MODEL_SPACING_MM)
        truth_array = np.asarray(nib.load(str(truth[image_id(path)])).dataobj).astype(np.int16)
        if truth_array.shape != tuple(volume.original_shape):
            logger.warning("Skipping %s: truth grid %s differs from the image's %s", path.name, truth_array.shape,
                           volume.original_shape)
            continue
        pred = predict(predictor, volume, prototypes, background, indices, args.samples, args.seed)
        stored = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        result = results[image_id(path)] = evaluate(pred, truth_array, stored, indices, args.near, check)
        seconds.append(time.perf_counter() - t0)
        logger.info("%s: Dice %.3f, served score %.4f, entropy AUROC %s, %.0f s", image_id(path),
                    result["dice"]["mean"], result["served_score"], result["auroc"]["entropy"][PRIMARY], seconds[-1])

    ids = sorted(results)
    errors = [1.0 - results[i]["dice"]["mean"] for i in ids]
    per_volume = volume_scores(results, names)
    variants = list(per_volume[ids[0]])
    ranking = {v: spearman([per_volume[i][v] for i in ids], errors) for v in variants}
    rho = {v: r["rho"] for v, r in ranking.items()}
    per_class_rho = {}
    for variant in CLASS_SCORES:
        table = {n: spearman([results[i]["scores"][variant][n] for i in ids],
                             [1.0 - results[i]["dice"][n] for i in ids])["rho"] for n in names}
        rhos = [r for r in table.values() if r is not None]
        per_class_rho[variant] = {**table, "mean_over_classes": round(float(np.mean(rhos)), 3) if rhos else None}
    maps = (*MODEL_MAPS, REFERENCE)
    auroc_summary = {m: {r: summary_of([results[i]["auroc"][m][r] for i in ids]) for r in REGIONS} for m in maps}
    batch = min(args.batch, len(ids))
    picks = {v: batch_errors([per_volume[i][v] for i in ids], errors, batch, args.beta, args.draws, args.seed)
             for v in variants}
    model_variants = [v for v in variants if not v.startswith(REFERENCE)]
    best_volume = max(model_variants, key=lambda v: -2 if rho[v] is None else rho[v])
    primary = {m: (auroc_summary[m][PRIMARY] or {}).get("mean", -1.0) for m in maps}
    best_map = max(MODEL_MAPS, key=primary.get)
    head_run = (served_with_head(sources, [path for path in pool if image_id(path) in results], truth, classes,
                                 args.checkpoint, args.head_minutes, args.seed, max(args.samples, 2), args.near,
                                 min(args.batch, len(results)))
                if args.head_minutes > 0 else None)
    met_rho = TARGETS["volume_spearman_rho"]
    met_auroc = TARGETS["voxel_auroc"]
    emit({
        "benchmark": "uncertainty",
        "data": str(args.data),
        "truth": str(args.truth),
        "checkpoint": str(args.checkpoint),
        "prototype_sources": [image.name for image, _ in sources],
        "pool_volumes": len(ids),
        "settings": {"samples": args.samples, "seed": args.seed, "near_voxels": args.near,
                     "error_voxels": "automatic label differs from the ground truth (background included)",
                     "regions": REGIONS, "primary_region": PRIMARY,
                     "missing_class_score": f"{MISSING} for the class-stratified scores (existing: 0, as served)",
                     "reference": f"{REFERENCE} is a histogram classifier of intensities, not model uncertainty",
                     "batch": batch, "beta": args.beta, "draws": args.draws},
        "targets": TARGETS,
        "volume_spearman_rho": rho,
        "volume_spearman_p": {v: r["p"] for v, r in ranking.items()},
        "per_class_spearman": per_class_rho,
        "best_model_volume_score": {"variant": best_volume, **ranking[best_volume]},
        "volume_target_met": {"existing": (rho["existing"] or -1) >= met_rho,
                              "best_model_score": (rho[best_volume] or -1) >= met_rho,
                              REFERENCE: max(rho[f"{REFERENCE}_{a}"] or -1 for a in AGGREGATES) >= met_rho},
        "voxel_auroc": auroc_summary,
        "best_model_map": {"map": best_map, f"{PRIMARY}_mean": primary[best_map]},
        "voxel_target_met": {"entropy (served)": primary["entropy"] >= met_auroc,
                             "best_model_map": primary[best_map] >= met_auroc,
                             REFERENCE: primary[REFERENCE] >= met_auroc},
        "first_batch_error": {"random_expected": round(float(np.mean(errors)), 4),
                              "oracle": round(float(np.sort(errors)[::-1][:batch].mean()), 4), **picks},
        "volumes": {i: {"dice": results[i]["dice"], "missing": results[i]["missing"],
                        "volume_scores": per_volume[i], "class_scores": results[i]["scores"],
                        "error_fraction": results[i]["error_fraction"],
                        "region_fraction": results[i]["region_fraction"], "auroc": results[i]["auroc"]}
                    for i in ids},
        "served_with_head": head_run,
        "seconds": round(time.perf_counter() - start, 1),
        "seconds_per_pool_volume": round(float(np.mean(seconds)), 1),
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
