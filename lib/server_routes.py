"""Two fixes to MONAI Label 0.8.5's own routes, applied when the app starts inside the server.

- ``POST /infer/{model}`` is declared ``async`` but runs the whole model inside it, which blocks the server's only
  event loop: while one annotator's ``protosam3d`` run or first click on a new image computes, every other request
  waits. Its plain-function twin runs in FastAPI's thread pool, so requests overlap (seg3d's caches, model store and
  prototype bank take locks for this).
- Its endpoints parse JSON form fields (``params``, ``info``) and check the infer inputs only by failing: invalid
  JSON, a JSON value that is not an object, or an infer request naming no image answer 500. They get a 422 with a
  message before MONAI Label's code runs (NaN and Infinity, which Python's JSON accepts, are refused as well).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from lib.errors import InvalidRequest

logger = logging.getLogger(__name__)

JSON_FORM_FIELDS = ("params", "info")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def check_json_fields(kwargs: dict[str, Any]) -> None:
    """Each JSON form field present must hold a JSON object, without NaN or Infinity (stored in the datastore's
    index, they would make every later listing of it fail)."""
    for field in JSON_FORM_FIELDS:
        text = kwargs.get(field)
        if not isinstance(text, str) or not text:
            continue
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as e:
            raise InvalidRequest(f"Form field '{field}' is not valid JSON: {e}") from e
        if not isinstance(value, dict):
            raise InvalidRequest(f"Form field '{field}' must be a JSON object, not {type(value).__name__}")


def check_infer_inputs(kwargs: dict[str, Any]) -> None:
    check_json_fields(kwargs)
    if not kwargs.get("image") and not kwargs.get("file") and not kwargs.get("session_id"):
        raise InvalidRequest("Give an image id ('image'), an uploaded 'file' or a 'session_id'")


def _like(endpoint: Callable, replacement: Callable) -> Callable:
    """``replacement`` with ``endpoint``'s signature (FastAPI's parameters) but no ``__wrapped__``, through which
    FastAPI would take a plain function for a coroutine; marked so it is never wrapped again."""
    replacement.__signature__ = inspect.signature(endpoint)
    replacement.__name__, replacement.__doc__ = endpoint.__name__, endpoint.__doc__
    replacement.seg3d_replaces = endpoint
    return replacement


def checked(endpoint: Callable, check: Callable[[dict], None]) -> Callable:
    """The coroutine endpoint, after ``check`` of its arguments."""

    async def run(**kwargs):
        check(kwargs)
        return await endpoint(**kwargs)

    return _like(endpoint, run)


def checked_in_thread_pool(endpoint: Callable, check: Callable[[dict], None]) -> Callable:
    """A plain-function twin of a coroutine endpoint that never awaits (FastAPI runs it in its thread pool)."""

    def run(**kwargs):
        check(kwargs)
        return asyncio.run(endpoint(**kwargs))

    return _like(endpoint, run)


def replace_routes(router: APIRouter, wrap: Callable[[APIRoute], Callable | None]) -> None:
    """Re-register each route of ``router`` for which ``wrap`` gives a new endpoint. Routes replaced before are left
    alone: MONAI Label's ``/reload`` builds the app again in the same server."""
    for route in list(router.routes):
        if not isinstance(route, APIRoute) or hasattr(route.endpoint, "seg3d_replaces"):
            continue
        endpoint = wrap(route)
        if endpoint is None:
            continue
        router.routes.remove(route)
        router.add_api_route(route.path.removeprefix(router.prefix), endpoint, methods=sorted(route.methods),
                             name=route.name, summary=route.summary, include_in_schema=route.include_in_schema,
                             deprecated=route.deprecated)


def harden_server_routes(threaded_infer: bool = True) -> bool:
    """Apply both fixes to the running server's routes; False outside a server (training and scoring subprocesses
    build the app without one)."""
    if "monailabel.app" not in sys.modules:
        return False
    from monailabel.endpoints import datastore, infer

    wrap_infer = checked_in_thread_pool if threaded_infer else checked
    replace_routes(infer.router, lambda r: wrap_infer(r.endpoint, check_infer_inputs) if "POST" in r.methods else None)
    replace_routes(datastore.router, lambda r: checked(r.endpoint, check_json_fields)
                   if set(JSON_FORM_FIELDS) & set(inspect.signature(r.endpoint).parameters) else None)
    logger.info("Infer requests run in the %s; JSON form fields and infer inputs are checked",
                "thread pool" if threaded_infer else "event loop")
    return True
