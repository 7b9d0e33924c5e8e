"""Reading provider replies, shared by the HTTP push transports: `Retry-After` and the status rules."""

from __future__ import annotations

import email.utils
import time

import httpx

from pushstr.transports.base import SendResult


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """The `Retry-After` header in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def network_failure(exc: httpx.HTTPError) -> SendResult:
    """A request that got no answer is worth retrying: the push service may never have seen it."""
    return SendResult.retry(f"network:{type(exc).__name__}")


def generic(response: httpx.Response, reason: str) -> SendResult:
    """The outcome for a status a transport has no specific rule for."""
    status = response.status_code
    if status == 429 or status >= 500:
        return SendResult.retry(reason, status, retry_after(response))
    return SendResult.rejected(reason, status)
