"""A server start removes the temporary folders no running server holds, and only those: a folder is held while
its server's lock is, whatever the pid in its name says (another pid namespace, or a pid reused)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from lib.temp_folder import LOCK_NAME, PREFIX, remove_orphaned_folders

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_SUCH_PID = 4_194_400  # above Linux's largest pid (2^22): no process here has it
HOLDER = ("import sys, time; from pathlib import Path; from lib.temp_folder import hold_lock\n"
          "assert hold_lock(Path(sys.argv[1])) is not None\n"
          "print('held', flush=True); time.sleep(120)\n")


def server_folder(parent: Path, pid: int, lock: bool) -> Path:
    folder = parent / f"{PREFIX}{pid}-test"
    folder.mkdir()
    (folder / "upload.nii.gz").write_bytes(b"0" * 64)
    if lock:
        (folder / LOCK_NAME).touch()
    return folder


def test_a_held_lock_keeps_the_folder_of_a_server_whose_pid_is_not_ours(tmp_path: Path):
    """A server in another pid namespace: its pid does not exist here, and its folder stays while it runs."""
    folder = server_folder(tmp_path, NO_SUCH_PID, lock=False)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert remove_orphaned_folders(tmp_path) == [] and folder.is_dir()
    finally:
        holder.send_signal(signal.SIGKILL)  # no exit hook runs: the kernel alone releases the lock
        holder.wait(timeout=30)
    assert remove_orphaned_folders(tmp_path) == [folder] and not folder.exists()


def test_a_free_lock_removes_the_folder_even_when_its_pid_runs(tmp_path: Path):
    """A reused pid: the named process runs (this one), but no server holds the folder."""
    folder = server_folder(tmp_path, os.getpid(), lock=True)
    assert remove_orphaned_folders(tmp_path) == [folder] and not folder.exists()


def test_without_a_lock_file_the_pid_decides(tmp_path: Path):
    running = server_folder(tmp_path, os.getpid(), lock=False)
    gone = server_folder(tmp_path, NO_SUCH_PID, lock=False)
    other = tmp_path / "not-a-server-folder"
    other.mkdir()
    assert remove_orphaned_folders(tmp_path) == [gone]
    assert running.is_dir() and other.is_dir() and not gone.exists()
