"""``bench.campaign --quick``: the simulated annotation campaign runs end to end on the sample pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.campaign import recorded_run
from tests.server import REPO_ROOT, SAMPLE

# the automatic white matter of the second volume, from the prototypes of the first save: above nothing (measured
# 0.17 on the volumes seed 0 picks, AMD EPYC; protosam3d from one label is weak)
AUTOMATIC_WHITE_MATTER = 0.05


def test_quick_campaign_learns_from_the_first_save(tmp_path):
    out, png = tmp_path / "campaign.json", tmp_path / "campaign.png"
    command = [sys.executable, "-m", "bench.campaign", "--quick", "--data", str(SAMPLE / "studies"),
               "--truth", str(SAMPLE / "studies_gt"), "--arms", "learning-random", "--max-clicks", "2",
               "--train-every", "1", "--train-steps", "4", "--head-steps", "4",
               "--val-split", "0",  # no forgetting check here: tests/test_forgetting.py
               "--out", str(out), "--plot", str(png)]
    subprocess.run(command, cwd=REPO_ROOT, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=900)
    summary = json.loads(out.read_text())
    [run] = summary["runs"]
    assert summary["settings"]["volumes"] == 2 and summary["settings"]["seeds"] == [0]
    assert len(run["order"]) == len(set(run["order"])) == 2  # two different volumes, each annotated once
    assert run["total_clicks"] == sum(run["clicks_per_volume"]) > 0
    # before any save every class starts from nothing; after the first, the second volume starts from protosam3d
    first, second = run["volumes"]
    assert all(c["start_dice"] == 0.0 and c["clicks"] > 0 for c in first["classes"].values())
    assert second["classes"]["white_matter"]["start_dice"] > AUTOMATIC_WHITE_MATTER
    assert first["fine_tune"]["published"] == 1  # the first save fine-tuned the adapters and published them
    assert first["head"]["published"] == 1  # ... and a segmentation head
    assert "fine_tune" not in second and "head" not in second  # nothing would use a model trained after the last
    assert png.stat().st_size > 10_000


def test_a_recorded_run_is_reused_only_with_the_same_settings(tmp_path):
    calls = []

    def run():
        calls.append(1)
        return {"total_clicks": len(calls)}

    settings = {"volumes": 12, "head_steps": 1000}
    assert recorded_run(tmp_path, settings, run, "learning-random-0") == {"total_clicks": 1}
    assert (tmp_path / "learning-random-0.json").exists()
    assert recorded_run(tmp_path, settings, run, "learning-random-0") == {"total_clicks": 1}  # resumed, not re-run
    assert recorded_run(tmp_path, settings | {"head_steps": 240}, run, "learning-random-0") == {"total_clicks": 2}
    assert len(calls) == 2
