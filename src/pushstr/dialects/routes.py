"""What the HTTP dialects' routes share: `ApiError`, the JSON error body every error response has, body parsing.

The API app turns every `ApiError` (and every other failure) into `{"error": <code>, "reason": <text>}`; dialects
whose wire format has its own error shape (Mostro) add their fields to `error_body`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

HTTP_ERRORS = Counter("pushstr_http_errors_total", "HTTP error responses", ["status"])

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "bad_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise from a route to answer `status` with a JSON reason."""

    def __init__(self, status: int, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code or _CODES.get(status, "error")


def error_body(status: int, reason: str, code: str | None = None) -> dict[str, Any]:
    return {"error": code or _CODES.get(status, "error"), "reason": reason}


def error_response(status: int, reason: str, code: str | None = None) -> JSONResponse:
    HTTP_ERRORS.labels(str(status)).inc()
    return JSONResponse(error_body(status, reason, code), status_code=status)


Body = TypeVar("Body", bound=BaseModel)


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; ApiError 400 otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def parse_body(body: bytes, model: type[Body]) -> Body:
    """A JSON object body validated by `model`; ApiError 400 naming the first bad field otherwise."""
    data = json_object(body)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"]) from None
