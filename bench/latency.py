"""Click latency through the real server, plus encoder/decoder time, for starter, FastSAM3D and SAM-Med3D sizes.
Requests ask for the result 3D Slicer and OHIF ask for (``.nrrd``, ``uint8``).

    python -m bench.latency --data data/sample/studies --checkpoint model/starter.pt --out out/latency.json

The starter row uses ``--checkpoint``; the FastSAM3D and SAM-Med3D rows use random weights of the official layouts
(timing does not depend on the weights). Every row runs in this one process on the same images and clicks.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from monai.transforms import LoadImage

from bench.common import emit, machine, parser, studies_with_classes, work_folder
from lib.model import build_sam3d, load_sam3d
from lib.prompts.simulation import first_click, next_click
from tests.server import client, running_server

# the result 3D Slicer's MONAI Label module and OHIF's panel ask for: raw NRRD, one byte per voxel
CLIENT_RESULT = {"result_extension": ".nrrd", "result_dtype": "uint8"}


def random_official_checkpoints(folder: Path) -> dict[str, dict[str, str]]:
    """Random-weight files in the official layouts: a SAM-Med3D checkpoint and a bare FastSAM3D student encoder."""
    torch.manual_seed(0)
    sam_med3d = folder / "sam_med3d_random.pth"
    torch.save({"model_state_dict": build_sam3d("sam_med3d").state_dict()}, sam_med3d)
    student = folder / "fastsam3d_random_encoder.pth"
    torch.save({"model_state_dict": build_sam3d("fastsam3d").image_encoder.state_dict()}, student)
    return {
        "fastsam3d": {"checkpoint": str(sam_med3d), "encoder_checkpoint": str(student)},
        "sam_med3d": {"checkpoint": str(sam_med3d)},
    }


def model_times(conf: dict[str, str], repeats: int) -> dict[str, float]:
    """Median encoder and decoder seconds for one 128^3 crop, in-process."""
    model = load_sam3d(conf["checkpoint"], conf.get("encoder_checkpoint"))
    image = torch.randn(1, 1, model.img_size, model.img_size, model.img_size)
    points, labels = torch.tensor([[[64.0, 64.0, 64.0]]]), torch.tensor([[1]])
    enc, dec = [], []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            embedding = model.encode(image)
            enc.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.decode(embedding, points=points, labels=labels)
            dec.append(time.perf_counter() - start)
    return {"encoder_s": statistics.median(enc), "decoder_s": statistics.median(dec),
            "parameters": sum(p.numel() for p in model.parameters())}


class PlannedObject(NamedTuple):
    """One image's object in :func:`click_plan`: its clicks and its stored label."""

    image_id: str
    name: str
    first: list[int]
    second: list[int]  # the most interior background voxel
    far: list[int]  # the labelled voxel farthest from ``first``
    target: np.ndarray  # bool, the object's stored label


def click_plan(pairs, classes, count: int, object_name: str | None = None) -> list[PlannedObject]:
    """One object per image, the first class's stored label; ``object_name`` replaces the stored class's name in
    the requests.

    The far click is the labelled voxel farthest from the first click: a second object whose crop is not cached yet,
    so its round trip includes the encoder on an already loaded image.
    """
    plan = []
    index = min(classes)
    for image_path, label_path in pairs[:count]:
        label = np.asarray(LoadImage(image_only=True)(str(label_path))).squeeze()
        target = label == index
        first = first_click(target)
        second, _ = next_click(np.ones_like(target), target)
        labelled = np.argwhere(label > 0)
        far = labelled[np.argmax(np.linalg.norm(labelled - first, axis=1))]
        plan.append(PlannedObject(image_path.name.split(".")[0], object_name or classes[index], first.tolist(),
                                  second.tolist(), far.tolist(), target))
    return plan


def returned_mask(path: str) -> np.ndarray:
    """The result file the client saved, as a bool array (then removed)."""
    mask = np.asarray(LoadImage(image_only=True)(path)).squeeze() > 0
    Path(path).unlink()
    return mask


def server_round_trips(url: str, plan: list[PlannedObject], follow_ups: int) -> dict[str, float | list[float]]:
    """Median seconds per click kind, and the follow-ups' 10th and 90th percentiles. Per image: the cold first
    click, a first click on the far object, then ``follow_ups`` follow-up clicks on the first object, each the
    simulated annotator's next click (:func:`lib.prompts.simulation.next_click`) on the result just returned, and
    counted only when the server reports no encoder run."""
    c = client(url)
    times: dict[str, list[float]] = {"cold": [], "first": [], "follow": []}

    def timed(bucket: str, image_id: str, params: dict) -> str:
        start = time.perf_counter()
        path, result = c.infer("sam3d", image_id, {**params, **CLIENT_RESULT})
        elapsed = time.perf_counter() - start
        hits = result["embedding_cached"]
        if bucket == "cold" or (bucket == "first" and not all(hits)) or (bucket == "follow" and all(hits)):
            times[bucket].append(elapsed)
        return path

    for image_id, name, a, _, far, target in plan:
        clicks: dict[bool, list[list[int]]] = {True: [a], False: []}
        mask = returned_mask(timed("cold", image_id, {"foreground": [a], "background": [], "label": name}))
        returned_mask(timed("first", image_id, {"foreground": [far], "background": [], "label": name + "_far"}))
        for _ in range(follow_ups):
            click = next_click(mask, target)
            if click is None:
                break
            clicks[click[1]].append(click[0].tolist())
            mask = returned_mask(timed("follow", image_id, {"foreground": clicks[True], "background": clicks[False],
                                                             "label": name}))
    follow = times["follow"]
    summary = {f"{name}_count": len(values) for name, values in times.items()}
    return {"first_click_cold_image_s": statistics.median(times["cold"]),
            "first_click_s": statistics.median(times["first"]) if times["first"] else float("nan"),
            "follow_up_click_s": statistics.median(follow) if follow else float("nan"),
            "follow_up_click_p10_p90_s": [float(np.percentile(follow, q)) for q in (10, 90)] if follow else None,
            **summary}


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--follow-ups", type=int, default=8, help="follow-up clicks per image")
    p.add_argument("--label", default=None,
                   help="object name sent with the clicks (default: the stored class's name); a name the starter's "
                        "decoder was not trained on times its class-agnostic refiner route")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pairs, classes = studies_with_classes(args.data)
    plan = click_plan(pairs, classes, args.images, args.label)
    rows = {}
    tmp = work_folder("seg3d-latency-")
    confs = {"starter": {"checkpoint": str(args.checkpoint)}, **random_official_checkpoints(tmp)}
    for variant, conf in confs.items():
        row = model_times(conf, args.repeats)
        log = (args.out.parent if args.out else tmp) / f"latency_server_{variant}.log"
        with running_server(args.data, {**conf, "device": "cpu"}, log) as server:
            row.update(server_round_trips(server.url, plan, args.follow_ups))
            row["server_rss_mb"] = server.rss_mb()
        rows[variant] = {k: round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v]
                         if isinstance(v, list) else v for k, v in row.items()}
        print(variant, rows[variant], flush=True)
    reference = rows["sam_med3d"]
    ratios = {v: {k: round(r[k] / reference[k], 3) for k in ("encoder_s", "first_click_s", "follow_up_click_s")}
              for v, r in rows.items()}
    emit({"benchmark": "latency", "data": str(args.data), "checkpoint": str(args.checkpoint), "images": len(plan),
          "label": plan[0].name if plan else None,
          "rows": rows, "ratio_to_sam_med3d": ratios, "machine": machine()}, args.out)


if __name__ == "__main__":
    main()
