"""Serve ``POST /infer/{model}`` from FastAPI's thread pool instead of the event loop.

MONAI Label 0.8.5 declares its infer endpoint ``async`` but runs the whole model inside it, which blocks the server's
only event loop: while one annotator's ``protosam3d`` run or a first click on a new image is computing, every other
request (clicks, next sample, ``/info``) waits. The same endpoint as a plain function runs in a worker thread, so
requests overlap; seg3d's caches, model store and prototype bank are guarded by locks for this.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys

from fastapi.routing import APIRoute

logger = logging.getLogger(__name__)


def blocking(endpoint):
    """A plain-function twin of a coroutine endpoint that never awaits (FastAPI runs it in its thread pool)."""

    def run_to_completion(*args, **kwargs):
        return asyncio.run(endpoint(*args, **kwargs))

    # the signature (FastAPI's parameters) but not ``__wrapped__``, through which FastAPI would see a coroutine
    run_to_completion.__signature__ = inspect.signature(endpoint)
    run_to_completion.__name__, run_to_completion.__doc__ = endpoint.__name__, endpoint.__doc__
    return run_to_completion


def thread_infer_requests() -> bool:
    """Re-register MONAI Label's infer route with its thread-pool twin. Only inside a running server (training
    and scoring subprocesses build the app without one); False when there is nothing to swap."""
    if "monailabel.app" not in sys.modules:
        return False
    from monailabel.endpoints.infer import router

    for route in list(router.routes):
        if isinstance(route, APIRoute) and "POST" in route.methods and asyncio.iscoroutinefunction(route.endpoint):
            router.routes.remove(route)
            router.add_api_route(route.path.removeprefix(router.prefix), blocking(route.endpoint),
                                 methods=sorted(route.methods), name=route.name, summary=route.summary)
            logger.info("POST %s runs in the thread pool: requests overlap", route.path)
            return True
    return False
