"""Request errors that MONAI Label's FastAPI server turns into 4xx responses with a message."""

from fastapi import HTTPException


class InvalidRequest(HTTPException):
    """Malformed or out-of-range request parameters (HTTP 422)."""

    def __init__(self, detail: str):
        super().__init__(status_code=422, detail=detail)


class NotFound(HTTPException):
    """An image, label or model that does not exist (HTTP 404)."""

    def __init__(self, detail: str):
        super().__init__(status_code=404, detail=detail)


class UnreadableImage(HTTPException):
    """A file that is not a readable image volume (HTTP 415)."""

    def __init__(self, detail: str):
        super().__init__(status_code=415, detail=detail)


class NotReady(HTTPException):
    """A request the app cannot serve yet in its current state, with what to do first (HTTP 409)."""

    def __init__(self, detail: str):
        super().__init__(status_code=409, detail=detail)
