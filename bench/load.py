"""Several annotators at once through the real server: requests per second and follow-up click latency percentiles.

    python -m bench.load --data data/sample/studies --checkpoint model/starter.pt --out out/load.json

Each of ``--clients`` annotators has its own labelled image of ``--data``, makes a first click (encoder), then sends
follow-up clicks (cached embedding) back to back for ``--seconds``. Scenarios: one client alone, all clients
together, and all clients while one more runs ``protosam3d`` on whole volumes. Each runs on the app's thread-pool
infer route and, side by side, on MONAI Label's own event-loop route (``--conf threaded_infer false``).
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
import torch

from bench.common import emit, machine, parser, studies_with_classes, work_folder
from bench.latency import PlannedObject, click_plan
from tests.server import client, running_server


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"count": len(values), "p50_s": round(float(p50), 4), "p90_s": round(float(p90), 4),
            "p99_s": round(float(p99), 4)}


def annotator(url: str, name: str, plan_row: PlannedObject, stop: threading.Event, latencies: list[float]) -> None:
    """A first click, then follow-up clicks on the same object until ``stop``; follow-up latencies appended."""
    image_id, label, a, b = plan_row.image_id, plan_row.name, plan_row.first, plan_row.second
    c = client(url, name)
    c.infer("sam3d", image_id, {"foreground": [a], "background": [], "label": label})
    follow_ups = ({"foreground": [a], "background": [b], "label": label},
                  {"foreground": [a, b], "background": [], "label": label})
    count = 0
    while not stop.is_set():
        start = time.perf_counter()
        _, result = c.infer("sam3d", image_id, dict(follow_ups[count % 2]))
        if all(result["embedding_cached"]):
            latencies.append(time.perf_counter() - start)
        count += 1


def whole_volumes(url: str, images: list[str], stop: threading.Event, durations: list[float]) -> None:
    c = client(url, "automatic")
    count = 0
    while not stop.is_set():
        start = time.perf_counter()
        c.infer("protosam3d", images[count % len(images)], {})
        durations.append(time.perf_counter() - start)
        count += 1


def scenario(url: str, plan: list[PlannedObject], clients: int, seconds: float, protosam3d: bool) -> dict:
    stop, latencies, durations = threading.Event(), [], []
    threads = [threading.Thread(target=annotator, args=(url, f"annotator-{i}", plan[i % len(plan)], stop, latencies))
               for i in range(clients)]
    if protosam3d:
        images = [row.image_id for row in plan]
        threads.append(threading.Thread(target=whole_volumes, args=(url, images, stop, durations)))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    start_of_stop = time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join()
    result = {"clients": clients, "follow_up_clicks_per_s": round(len(latencies) / seconds, 2),
              **percentiles(latencies), "drain_s": round(time.perf_counter() - start_of_stop, 2)}
    if protosam3d:
        result["protosam3d_runs"] = len(durations)
        result["protosam3d_median_s"] = round(statistics.median(durations), 3) if durations else None
    return result


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pairs, classes = studies_with_classes(args.data)
    plan = click_plan(pairs, classes, args.clients)
    runs = {}
    tmp = work_folder("seg3d-load-")
    for route, threaded in (("thread_pool", "true"), ("event_loop", "false")):
        conf = {"checkpoint": str(args.checkpoint), "threaded_infer": threaded,
                "state_dir": str(tmp / route)}
        log = (args.out.parent if args.out else tmp) / f"load_server_{route}.log"
        with running_server(args.data, conf, log) as server:
            runs[route] = {
                "one_client": scenario(server.url, plan, 1, args.seconds, False),
                "clients": scenario(server.url, plan, args.clients, args.seconds, False),
                "clients_and_protosam3d": scenario(server.url, plan, args.clients, args.seconds, True),
            }
        print(route, runs[route], flush=True)
    ratios = {name: {"clicks_per_s": round(runs["thread_pool"][name]["follow_up_clicks_per_s"]
                                           / max(runs["event_loop"][name]["follow_up_clicks_per_s"], 1e-9), 2),
                     # a scenario too short for any follow-up click has no percentiles
                     "p90": (round(runs["thread_pool"][name]["p90_s"] / runs["event_loop"][name]["p90_s"], 2)
                             if "p90_s" in runs["thread_pool"][name] and "p90_s" in runs["event_loop"][name]
                             else None)}
              for name in runs["thread_pool"]}
    emit({"benchmark": "load", "data": str(args.data), "checkpoint": str(args.checkpoint), "seconds": args.seconds,
          "runs": runs, "thread_pool_over_event_loop": ratios, "machine": machine()}, args.out)


if __name__ == "__main__":
    main()
