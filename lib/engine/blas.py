"""One thread for NumPy's BLAS in the server.

NumPy's OpenBLAS starts its own threads for a matrix operation, however small, and on a CPU whose cores PyTorch's
OpenMP threads have just used they wait for them: measured here (AMD EPYC, 2 cores, 2 torch threads), a 4x4
``np.linalg.inv`` right after a torch operation takes 1-4 ms against 8 microseconds alone, and a follow-up click
makes five of them. The server's NumPy linear algebra is this small (affine maps), so one thread loses nothing.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def single_threaded_blas() -> None:
    """Limits every BLAS library loaded in this process (NumPy's, SciPy's) to one thread, from now on."""
    threadpool_limits(limits=1, user_api="blas")
