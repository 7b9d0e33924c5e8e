"""What the HTTP dialects' routes share: `ApiError`, the JSON error body every error response has, body parsing,
and how a route declares its body and its answers in the OpenAPI document.

The API app turns every `ApiError` (and every other failure) into `{"error": <code>, "reason": <text>}`; dialects
whose wire format has its own error shape (Mostro) add their fields to `error_body`.

Routes read their bodies as bytes (NIP-98 signs the exact bytes, and one bounded parse gives every dialect the
same errors), so FastAPI cannot see what they take: `json_request` and `answers` declare it, and the schema test
checks that the declarations hold.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field, ValidationError

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


class ErrorBody(BaseModel):
    """Every error response's body."""

    error: str = Field(description="a stable code: bad_request, unauthorized, payload_too_large, …")
    reason: str = Field(description="what was wrong and, where it helps, what to send instead")


Responses = dict[int | str, dict[str, Any]]


def answers(*statuses: int, model: type[BaseModel] = ErrorBody) -> Responses:
    """A route's `responses=`: the error statuses it can answer, each with the error body `model`."""
    return {status: {"model": model, "description": HTTPStatus(status).phrase} for status in statuses}


def success(model: type[BaseModel], status: int = 200) -> Responses:
    """A route's `responses=` entry for its success answer (routes build their JSON themselves: `model` says
    what it holds)."""
    return {status: {"model": model, "description": HTTPStatus(status).phrase}}


def json_request(*models: type[BaseModel]) -> dict[str, Any]:
    """A route's `openapi_extra=`: the JSON body it reads itself, described by `models` (one of them when several:
    a body of one kind has none of the others' required fields, or has them null)."""
    schemas = [inline_schema(model) for model in models]
    if len(schemas) > 1:
        for schema, others in ((schema, [other for other in schemas if other is not schema]) for schema in schemas):
            exclusive = {field for other in others for field in other.get("required", ())} - set(schema["required"])
            schema["not"] = {
                "anyOf": [
                    {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
                    for field in sorted(exclusive)
                ]
            }
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` written in place, so it stands alone inside an operation."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
