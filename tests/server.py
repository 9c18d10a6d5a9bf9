"""Start the real MONAI Label server (``monailabel start_server``) on 127.0.0.1 for integration tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests
from monailabel.client import MONAILabelClient

from bench.common import work_folder
from lib.data.build_sample import ensure_sample
from lib.log_config import write_log_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "sample"


def sample_studies(folder: Path, images: Iterable[str], files: Iterable[str] = ()) -> Path:
    """``folder`` filled with the sample's ``images`` and ``files`` (paths in the sample's studies folder, e.g.
    ``classes.txt`` or ``labels/final/subj_000.nii.gz``); the sample data is built first when missing."""
    source = ensure_sample(SAMPLE) / "studies"
    for relative in [f"{name}.nii.gz" for name in images] + list(files):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / relative, folder / relative)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    log_path: Path

    def rss_mb(self) -> float:
        """Resident memory of the server and its child processes."""
        root = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serving_process(args: list[str], log_path: Path, probe_url: str, timeout: float,
                    env: dict[str, str] | None = None, new_session: bool = False) -> Iterator[subprocess.Popen]:
    """Start ``args`` (output to ``log_path``; in a session and process group of its own with ``new_session``) and
    yield once ``probe_url`` answers 200; stopped afterwards. Fails with the end of the log if the process exits or
    does not answer in time."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT),
                                   start_new_session=new_session)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{args[0]} exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
                with contextlib.suppress(requests.RequestException):
                    if requests.get(probe_url, timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{args[0]} did not start:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def running_server(studies: Path | str, conf: dict[str, str], log_path: Path, timeout: float = 180.0,
                   env: dict[str, str] | None = None, new_session: bool = False) -> Iterator[Server]:
    """Run seg3d on ``studies`` (a folder or a DICOMweb URL) with extra environment ``env`` and yield it once
    ``/info`` answers; the server is stopped afterwards. ``new_session``: the server leads a process group of its
    own (its pid is the group id). ``TMPDIR`` is a new work folder unless ``env`` names one."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "TMPDIR": str(work_folder("server-tmp-")), **(env or {})}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MONAI_LABEL_AUTO_UPDATE_SCORING"] = "false"
    app = REPO_ROOT / "apps" / "seg3d"
    args = [os.path.join(bin_dir, "monailabel"), "start_server", "--app", str(app), "--studies", str(studies),
            "--host", "127.0.0.1", "--port", str(port), "--log_config", str(write_log_config(app))]
    for key, value in conf.items():
        args += ["--conf", key, value]
    url = f"http://127.0.0.1:{port}"
    with serving_process(args, log_path, f"{url}/info/", timeout, env, new_session) as process:
        yield Server(url=url, pid=process.pid, log_path=log_path)


def client(url: str, client_id: str | None = None) -> MONAILabelClient:
    """A client with its own download folder: the server deletes its result file (same name) from the shared /tmp
    right after responding, which would race with a client saving into /tmp on the same machine. The folder is
    removed when the process exits (each result file is several MB)."""
    return MONAILabelClient(server_url=url, tmpdir=str(work_folder("client-")), client_id=client_id)
