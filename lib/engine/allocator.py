"""One glibc malloc arena for the server's request threads.

The server runs each request on a worker thread (:mod:`lib.server_routes`). glibc gives threads arenas of their own,
and the large tensors a click allocates and frees then cost more on a worker thread than on the main thread:
measured here (AMD EPYC, 2 threads, 24 follow-up clicks on the click refiner's route, in-process), 125-138 ms median
model time on a worker thread against 90-104 ms on the main thread, and 87-92 ms on a worker thread sharing the main
arena. This is what ``MALLOC_ARENA_MAX=1`` does, set from inside so that it holds however the server is started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt(3) parameter


def share_main_arena() -> bool:
    """Makes threads that allocate from now on use glibc's main arena; False (and nothing changed) on other C
    libraries."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        done = bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError, TypeError):
        done = False
    if not done:
        logger.info("mallopt(M_ARENA_MAX) is not available; request threads keep their own malloc arenas")
    return done
