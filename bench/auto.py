"""``protosam3d`` (automatic segmentation from prototypes): Dice per class and whole-volume latency.

    python -m bench.auto --data data/sample/studies --eval-data data/sample/eval --out out/auto.json

Prototypes come from the first 1 and from the first 3 labelled volumes of ``--data`` (``--shots``); Dice is
measured on every volume of ``--eval-data``. ``--adapters DIR`` adds a run with the adapters published in
``DIR/adapters`` (for example the state folder ``bench/finetune.py --state DIR`` leaves). Latency and peak memory are
measured on the MNI152 T1 template itself (1 mm, 197x233x189; ``--skip-template-latency`` leaves it out).

The trained baseline: for each ``--shots`` k, a MONAI SegResNet trained from scratch on the same k labelled volumes
for ``--segresnet-minutes`` of wall clock (``lib/segmentation/segresnet.py``; 0 leaves it out), its Dice on the same
held-out volumes, and ``comparison``: protosam3d minus SegResNet per class and k, and which source is better.

What the app serves: for each k, the app itself (``apps/seg3d``) on a studies folder holding the k labelled volumes
and the held-out images, its ``segmentation`` trainer run for ``--served-minutes`` (a SegResNet head; one label held
out chooses each class's source, or with k = 1 that label itself), then ``protosam3d`` through the app's infer on every
held-out volume (``served_<k>_labelled``, with the sources it used).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bench.common import REPO_ROOT, app_on_studies, app_result, emit, machine, parser, studies_with_classes, work_folder
from lib.data.mni import load_template
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.prompts.simulation import dice
from lib.prototypes.auto import segment_automatically
from lib.prototypes.bank import PrototypeBank, image_entry
from lib.segmentation import segresnet
from lib.transforms.preprocess import load_model_volume


def build_bank(predictor: InteractivePredictor, pairs, classes: dict[int, str]) -> PrototypeBank:
    bank = PrototypeBank(work_folder() / "bank.pt")
    names = {name: index for index, name in classes.items()}
    for image, label in pairs:
        volume = load_model_volume(str(image), MODEL_SPACING_MM)
        bank.entries[image.name] = image_entry(predictor, volume, str(label), names, None, MODEL_SPACING_MM)
    return bank


def evaluate(predictor: InteractivePredictor, bank: PrototypeBank, eval_pairs, classes: dict[int, str]) -> dict:
    names = bank.class_names()
    per_class, background = bank.prototypes(names)
    indices = {name: index for index, name in classes.items()}
    scores: dict[str, list[float]] = {name: [] for name in names}
    seconds = []
    for image, label_path in eval_pairs:
        volume = load_model_volume(str(image), MODEL_SPACING_MM)
        truth = np.asarray(nib.load(str(label_path)).dataobj)
        start = time.perf_counter()
        result = segment_automatically(predictor, volume, dict(zip(names, per_class, strict=True)), background, indices)
        seconds.append(time.perf_counter() - start)
        for name in names:
            scores[name].append(dice(result.label.numpy() == indices[name], truth == indices[name]))
    table = {name: round(float(np.mean(v)), 4) for name, v in scores.items()}
    table["mean"] = round(float(np.mean(list(table.values()))), 4)
    return {"dice": table, "seconds_per_volume": round(float(np.mean(seconds)), 2)}


def train_segresnet(pairs, classes: dict[int, str], minutes: float, config: segresnet.SegResNetConfig):
    """A SegResNet trained on ``pairs`` for ``minutes`` (loading and resampling the volumes not counted)."""
    start = time.perf_counter()
    data = [segresnet.model_space_pair(str(image), str(label), MODEL_SPACING_MM) for image, label in pairs]
    loading = time.perf_counter() - start
    trained = segresnet.train(data, max(classes) + 1, minutes * 60.0, config)
    return trained, loading


def evaluate_segresnet(trained: segresnet.TrainedSegResNet, eval_pairs, classes: dict[int, str]) -> dict:
    """Like :func:`evaluate`: Dice per class on the stored grid and seconds per volume (loading not counted)."""
    scores: dict[str, list[float]] = {name: [] for name in classes.values()}
    seconds = []
    for image, label_path in eval_pairs:
        volume = load_model_volume(str(image), MODEL_SPACING_MM)
        truth = np.asarray(nib.load(str(label_path)).dataobj)
        start = time.perf_counter()
        label = segresnet.segment(trained, volume).numpy()
        seconds.append(time.perf_counter() - start)
        for index, name in classes.items():
            scores[name].append(dice(label == index, truth == index))
    table = {name: round(float(np.mean(v)), 4) for name, v in sorted(scores.items())}
    table["mean"] = round(float(np.mean(list(table.values()))), 4)
    return {"dice": table, "seconds_per_volume": round(float(np.mean(seconds)), 2)}


def compare(runs: dict, models: list[str], shots: list[int]) -> dict:
    """Per k: protosam3d minus SegResNet Dice per class (each protosam3d model), and the better source by mean."""
    comparison = {}
    for k in shots:
        trained = runs.get(f"segresnet_{k}_labelled")
        if trained is None:
            continue
        entry: dict = {}
        for model in models:
            proto = runs[f"{model}_{k}_labelled"]["dice"]
            entry[f"{model}_minus_segresnet"] = {
                name: round(proto[name] - trained["dice"][name], 4) for name in proto if name in trained["dice"]
            }
        sources = {f"protosam3d_{m}": runs[f"{m}_{k}_labelled"]["dice"]["mean"] for m in models}
        sources["segresnet"] = trained["dice"]["mean"]
        entry["better_by_mean"] = max(sources, key=sources.get)
        best_proto = max(runs[f"{m}_{k}_labelled"]["dice"]["mean"] for m in models)
        entry["protosam3d_within_0.05"] = bool(best_proto >= trained["dice"]["mean"] - 0.05)
        comparison[str(k)] = entry
    return comparison


def template_latency(predictor: InteractivePredictor, bank: PrototypeBank, classes: dict[int, str]) -> dict:
    """Whole-volume protosam3d time on the 1 mm template (first run computes the embeddings; peak RSS)."""
    template = load_template()
    path = work_folder() / "mni152_1mm.nii.gz"
    nib.save(nib.Nifti1Image(template.t1, template.affine), str(path))
    names = bank.class_names()
    per_class, background = bank.prototypes(names)
    indices = {name: index for index, name in classes.items()}
    start = time.perf_counter()
    volume = load_model_volume(str(path), MODEL_SPACING_MM)
    segment_automatically(predictor, volume, dict(zip(names, per_class, strict=True)), background, indices)
    return {
        "shape": list(template.t1.shape),
        "seconds_including_loading": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def served_run(pairs, eval_pairs, classes: dict[int, str], checkpoint: Path, minutes: float, seed: int) -> dict:
    """The app's ``protosam3d`` after its ``segmentation`` trainer ran on ``pairs`` (see the module's doc)."""
    app = app_on_studies(work_folder("seg3d-served-"), pairs, [image for image, _ in eval_pairs],
                         classes, checkpoint)
    start = time.perf_counter()
    stats = app.train({"model": "segmentation", "max_minutes": minutes, "seed": seed})
    train_seconds = time.perf_counter() - start
    scores: dict[str, list[float]] = {}
    seconds, sources = [], {}
    for image, label_path in eval_pairs:
        truth = np.asarray(nib.load(str(label_path)).dataobj)
        start = time.perf_counter()
        label, params = app_result(app, {"model": "protosam3d", "image": image.name.split(".")[0]})
        seconds.append(time.perf_counter() - start)
        sources = params["sources"]
        for name, value in params["classes"].items():
            scores.setdefault(name, []).append(dice(label == value, truth == value))
    table = {name: round(float(np.mean(v)), 4) for name, v in scores.items()}
    table["mean"] = round(float(np.mean(list(table.values()))), 4)
    publication = stats.get("publication", {})
    return {"dice": table, "seconds_per_volume": round(float(np.mean(seconds)), 2), "sources": sources,
            "head_validation": publication.get("validation"), "train_seconds": round(train_seconds, 1),
            "head_iterations": app.protosam3d_config.heads.load().metadata["iterations"]}


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--eval-data", type=Path, default=REPO_ROOT / "data" / "sample" / "eval")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 3], help="labelled volumes the prototypes come from")
    p.add_argument("--adapters", type=Path, default=None, help="state folder with published adapters/")
    p.add_argument("--segresnet-minutes", type=float, default=5.0,
                   help="wall-clock training budget of the SegResNet baseline per k (0: no baseline)")
    p.add_argument("--segresnet-filters", type=int, default=8, help="SegResNet init_filters (a multiple of 8)")
    p.add_argument("--segresnet-crop", type=int, default=64, help="training crop and inference window edge (voxels)")
    p.add_argument("--seed", type=int, default=0, help="SegResNet initialisation, crops and augmentation")
    p.add_argument("--served-minutes", type=float, default=5.0,
                   help="the app's segmentation trainer budget per k (0: leave the served runs out)")
    p.add_argument("--skip-template-latency", action="store_true", help="do not measure the 1 mm template latency")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pairs, classes = studies_with_classes(args.data)
    eval_pairs, _ = studies_with_classes(args.eval_data)
    models = {"base": ModelStore(args.checkpoint)}
    if args.adapters:
        models["adapters"] = ModelStore(args.checkpoint, adapter_root=args.adapters / "adapters")
    runs = {}
    latency = None
    for model_name, store in models.items():
        predictor = InteractivePredictor(store)
        for shots in args.shots:
            start = time.perf_counter()
            bank = build_bank(predictor, pairs[:shots], classes)
            build_seconds = time.perf_counter() - start
            runs[f"{model_name}_{shots}_labelled"] = evaluate(predictor, bank, eval_pairs, classes)
            runs[f"{model_name}_{shots}_labelled"]["build_seconds"] = round(build_seconds, 1)
            print(model_name, shots, runs[f"{model_name}_{shots}_labelled"], flush=True)
        if latency is None and not args.skip_template_latency:
            latency = template_latency(InteractivePredictor(store), bank, classes)
    config = segresnet.SegResNetConfig(init_filters=args.segresnet_filters, crop=args.segresnet_crop, seed=args.seed)
    for shots in args.shots if args.segresnet_minutes > 0 else []:
        trained, loading = train_segresnet(pairs[:shots], classes, args.segresnet_minutes, config)
        row = evaluate_segresnet(trained, eval_pairs, classes)
        runs[f"segresnet_{shots}_labelled"] = {**row, **trained.summary(), "loading_seconds": round(loading, 1)}
        print("segresnet", shots, runs[f"segresnet_{shots}_labelled"], flush=True)
    for shots in args.shots if args.served_minutes > 0 else []:
        runs[f"served_{shots}_labelled"] = served_run(pairs[:shots], eval_pairs, classes,
                                                      args.checkpoint, args.served_minutes, args.seed)
        print("served", shots, runs[f"served_{shots}_labelled"], flush=True)
    emit({
        "benchmark": "auto",
        "data": str(args.data),
        "eval_data": str(args.eval_data),
        "eval_volumes": len(eval_pairs),
        "checkpoint": str(args.checkpoint),
        "prototype_sources": {str(s): [pair[0].name for pair in pairs[:s]] for s in args.shots},
        "runs": runs,
        "segresnet_minutes": args.segresnet_minutes,
        "served_minutes": args.served_minutes,
        "comparison": compare(runs, list(models), args.shots),
        "template_latency": latency,
        "adapter_version": models["adapters"].adapter() if "adapters" in models else None,
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
