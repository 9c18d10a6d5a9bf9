"""Stopping the real server stops its workers: after SIGTERM to ``monailabel start_server`` while a scoring and a
training subprocess run, no process of the server's group is left within 10 s, the datastore index still parses,
and the interrupted training published nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.server import running_server, sample_studies

LABELED = ("subj_000", "subj_001")
UNLABELED = ("subj_003", "subj_004", "subj_005", "subj_006")
STOP_WITHIN_S = 10.0


def worker(server_pid: int, method: str) -> psutil.Process | None:
    """MONAI Label's subprocess for ``method`` (train, scoring) below the server, if one runs."""
    try:
        below = psutil.Process(server_pid).children(recursive=True)
    except psutil.Error:
        return None
    for process in below:
        try:
            command = process.cmdline()
        except psutil.Error:
            continue
        if "monailabel.interfaces.utils.app" in command and method in command:
            return process
    return None


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Running processes of the process group ``pgid`` (zombies waiting for a reaper aside)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and running(process):
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


def wait_for(condition, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout:.0f} s:\n{log()[-4000:]}")
        time.sleep(0.5)


@pytest.fixture
def studies(tmp_path) -> Path:
    labels = [f"labels/final/{name}.nii.gz" for name in LABELED]
    return sample_studies(tmp_path / "studies", LABELED + UNLABELED, ["classes.txt", *labels])


def stop_and_check(server, signum: int) -> None:
    """Send ``signum`` to the server while its scoring and training subprocesses run; within 10 s no process of its
    group, and none of the tree it had, may still run."""
    scoring, training = worker(server.pid, "scoring"), worker(server.pid, "train")
    assert scoring and running(scoring) and training and running(training), server.log()[-4000:]
    tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]

    os.kill(server.pid, signum)
    started = time.monotonic()
    while (group_members(server.pid) or any(running(p) for p in tree)) and time.monotonic() - started < STOP_WITHIN_S:
        time.sleep(0.2)
    left = [(p.pid, p.cmdline()) for p in group_members(server.pid) if running(p)]
    assert not left, f"still running {time.monotonic() - started:.1f} s after the signal: {left}"
    assert not [p.pid for p in tree if running(p)]
    log = server.log()
    assert f"{signal.Signals(signum).name}: stopped subprocesses" in log, log[-4000:]


def start_workers(server) -> None:
    requests.post(f"{server.url}/scoring/sam3d_uncertainty", timeout=30).raise_for_status()
    requests.post(f"{server.url}/train/sam3d", timeout=30).raise_for_status()
    wait_for(lambda: worker(server.pid, "scoring") and worker(server.pid, "train"), 120,
             "the scoring and training subprocesses", server.log)


def test_sigterm_during_scoring_and_training_stops_both_and_keeps_the_index_whole(studies, tmp_path):
    state = tmp_path / "state"
    conf = {"state_dir": str(state), "uncertainty_samples": "1"}
    with running_server(studies, conf, tmp_path / "server.log", new_session=True) as server:
        start_workers(server)
        # stop in the middle of scoring: one volume has its score written, three are still to do
        wait_for(lambda: "Scored subj_" in server.log(), 600, "a first score", server.log)
        stop_and_check(server, signal.SIGTERM)

    index = json.loads((studies / "datastore_v2.json").read_text())  # whole, not cut off by the stop
    scores = {name: info["image"]["info"].get("sam3d_uncertainty") for name, info in index["objects"].items()
              if name in UNLABELED}
    assert any(scores.values()), scores  # the scores written before the stop are there
    assert not list(state.glob("adapters/*/v*.pt"))  # the interrupted training published nothing
    assert not list(studies.glob(".datastore_v2.json.*.tmp"))


def test_sigint_stops_both_subprocesses(studies, tmp_path):
    """Ctrl-C in a terminal (the terminal sends it to the whole group; here only the server gets it)."""
    state = tmp_path / "state"
    with running_server(studies, {"state_dir": str(state)}, tmp_path / "server.log", new_session=True) as server:
        start_workers(server)
        wait_for(lambda: "Training on 2 final labels" in server.log(), 300, "training", server.log)
        stop_and_check(server, signal.SIGINT)
    json.loads((studies / "datastore_v2.json").read_text())
    assert not list(state.glob("adapters/*/v*.pt"))
