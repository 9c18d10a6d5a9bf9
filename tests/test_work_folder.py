"""A bench's work folders (copies of volumes, results and state) are removed, and its child processes (a server)
stopped, when the process ends, SIGTERM included."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
HOLDER = ("from bench.common import work_folder; import subprocess, time\n"
          "folder = work_folder('held-'); (folder / 'volume.nii').write_bytes(b'0' * 1024)\n"
          "child = subprocess.Popen(['sleep', '120'])\n"
          "print(folder, child.pid, flush=True); time.sleep(120)\n")


def _holder(tmp_path: Path) -> tuple[subprocess.Popen, Path, psutil.Process]:
    """A process holding a work folder and a child process, and both."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    folder, pid = process.stdout.readline().split()
    assert Path(folder).is_dir() and Path(folder).is_relative_to(tmp_path)
    return process, Path(folder), psutil.Process(int(pid))


def test_sigterm_removes_work_folders_and_still_ends_the_process(tmp_path: Path):
    process, folder, child = _holder(tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM  # ended by the signal, as before
    assert not folder.exists()
    assert list(tmp_path.glob("seg3d-work-*")) == []
    child.wait(timeout=10)  # stopped, not orphaned: raises TimeoutExpired while it still runs


def test_sigkill_is_the_only_end_that_leaves_them(tmp_path: Path):
    """The control: without a handler's chance to run, the folder stays and the child runs on (so the test above can
    fail)."""
    process, folder, child = _holder(tmp_path)
    process.kill()
    process.wait(timeout=30)
    assert folder.exists()
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    child.kill()
