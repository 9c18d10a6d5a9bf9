"""``protosam3d`` (automatic segmentation from prototypes): Dice per class and whole-volume latency.

    python -m bench.auto --data data/sample/studies --eval-data data/sample/eval --out out/auto.json

Prototypes come from the first 1 and from the first 3 labelled volumes of ``--data`` (``--shots``); Dice is
measured on every volume of ``--eval-data``. ``--adapters DIR`` adds a run with the adapters published in
``DIR/adapters`` (for example the state folder ``bench/finetune.py --state DIR`` leaves). Latency and peak memory are
measured on the MNI152 T1 template itself (1 mm, 197x233x189).
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bench.common import REPO_ROOT, emit, machine, parser, studies_with_classes
from lib.data.mni import load_template
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.prompts.simulation import dice
from lib.prototypes.auto import segment_automatically
from lib.prototypes.bank import PrototypeBank, image_entry
from lib.transforms.preprocess import load_model_volume


def build_bank(predictor: InteractivePredictor, pairs, classes: dict[int, str]) -> PrototypeBank:
    bank = PrototypeBank(Path(tempfile.mkdtemp()) / "bank.pt")
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


def template_latency(predictor: InteractivePredictor, bank: PrototypeBank, classes: dict[int, str]) -> dict:
    """Whole-volume protosam3d time on the 1 mm template (first run computes the embeddings; peak RSS)."""
    template = load_template()
    path = Path(tempfile.mkdtemp()) / "mni152_1mm.nii.gz"
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


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--eval-data", type=Path, default=REPO_ROOT / "data" / "sample" / "eval")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 3], help="labelled volumes the prototypes come from")
    p.add_argument("--adapters", type=Path, default=None, help="state folder with published adapters/")
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
            bank = build_bank(predictor, pairs[:shots], classes)
            runs[f"{model_name}_{shots}_labelled"] = evaluate(predictor, bank, eval_pairs, classes)
            print(model_name, shots, runs[f"{model_name}_{shots}_labelled"], flush=True)
        if latency is None:
            latency = template_latency(InteractivePredictor(store), bank, classes)
    emit({
        "benchmark": "auto",
        "data": str(args.data),
        "eval_data": str(args.eval_data),
        "eval_volumes": len(eval_pairs),
        "checkpoint": str(args.checkpoint),
        "prototype_sources": {str(s): [pair[0].name for pair in pairs[:s]] for s in args.shots},
        "runs": runs,
        "template_latency": latency,
        "adapter_version": models["adapters"].adapter() if "adapters" in models else None,
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
