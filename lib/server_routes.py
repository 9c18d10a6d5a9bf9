"""Two fixes to MONAI Label 0.8.5's own routes, applied when the app starts inside the server.

- ``POST /infer/{model}`` is declared ``async`` but runs the whole model inside it, which blocks the server's only
  event loop: while one annotator's ``protosam3d`` run or first click on a new image computes, every other request
  waits. Its plain-function twin runs in FastAPI's thread pool, so requests overlap (seg3d's caches, model store and
  prototype bank take locks for this).
- Its endpoints parse JSON form fields (``params``, ``info``) and check the infer inputs only by failing: invalid
  JSON, a JSON value that is not an object, or an infer request naming no image answer 500. They get a 422 with a
  message before MONAI Label's code runs (NaN and Infinity, which Python's JSON accepts, are refused as well).
- JSON request bodies (``/activelearning``, ``/train``, ``/scoring``) may hold NaN or Infinity, which Starlette's
  parser accepts: where the body is not what the route expects, FastAPI's own validation-error handler fails to echo
  the value (500); where it is, the value could reach the datastore's index (a ``client_id`` of NaN is stored in the
  image's info) and break every later listing. Both answer 422 with a message: an exception handler registered on
  the server, and a check of the parsed body before MONAI Label's code runs.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from lib.errors import InvalidRequest

logger = logging.getLogger(__name__)

JSON_FORM_FIELDS = ("params", "info")
NON_FINITE_MESSAGE = "The JSON body holds NaN or Infinity, which are not JSON numbers; send finite numbers or null"


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


def non_finite(value: Any) -> bool:
    """Whether a parsed JSON value holds NaN or an infinity anywhere."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(non_finite(v) for v in value)
    return False


def check_json_body(kwargs: dict[str, Any]) -> None:
    """A JSON body (the ``params`` of next sample, train and scoring requests) holds only finite numbers."""
    if non_finite(kwargs.get("params")):
        raise InvalidRequest(NON_FINITE_MESSAGE)


def _printable(value: Any) -> Any:
    """``value`` with NaN and infinities as strings ('nan', 'inf', '-inf'), which JSON can carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


async def validation_error_handler(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's answer to a request its validation refuses (422), also when the refused input holds NaN or
    Infinity: FastAPI's own handler echoes the input and fails to encode those (500)."""
    errors = exc.errors()
    if not non_finite([error.get("input") for error in errors]):
        return await request_validation_exception_handler(request, exc)
    return JSONResponse(status_code=422,
                        content={"detail": NON_FINITE_MESSAGE, "errors": jsonable_encoder(_printable(errors))})


def install_validation_error_handler(app: FastAPI) -> None:
    """Register :func:`validation_error_handler` on the running server. Starlette copies the handlers into the
    middleware stack it builds for the first ASGI call (the lifespan, before MONAI Label builds the app), so the
    stack is dropped and built again, with the handler, for the next request."""
    if app.exception_handlers.get(RequestValidationError) is validation_error_handler:
        return
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.middleware_stack = None


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
    """Apply the fixes to the running server's routes; False outside a server (training and scoring subprocesses
    build the app without one)."""
    if "monailabel.app" not in sys.modules:
        return False
    from monailabel.endpoints import activelearning, datastore, infer, scoring, train

    wrap_infer = checked_in_thread_pool if threaded_infer else checked
    replace_routes(infer.router, lambda r: wrap_infer(r.endpoint, check_infer_inputs) if "POST" in r.methods else None)
    replace_routes(datastore.router, lambda r: checked(r.endpoint, check_json_fields)
                   if set(JSON_FORM_FIELDS) & set(inspect.signature(r.endpoint).parameters) else None)
    for router in (activelearning.router, train.router, scoring.router):
        replace_routes(router, lambda r: checked(r.endpoint, check_json_body)
                       if "params" in inspect.signature(r.endpoint).parameters else None)
    install_validation_error_handler(sys.modules["monailabel.app"].app)
    logger.info("Infer requests run in the %s; JSON form fields, JSON bodies and infer inputs are checked",
                "thread pool" if threaded_infer else "event loop")
    return True
