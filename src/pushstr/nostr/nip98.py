"""NIP-98 HTTP auth: `Authorization: Nostr <base64(kind 27235 event)>`.

A token authorizes exactly one request: its `u` tag must equal the absolute request URL, its `method` tag the
HTTP method, its `payload` tag the body's sha256, its created_at must be within the window, and (with a `seen`
hook) its id must not have been used before.

URL comparison is an exact string match. Normalising URLs (case, default ports, percent-encoding, trailing
slashes, query order) would make two different strings authorize the same request and differs between
frameworks; clients sign the URL they send, and the server knows the public URL it is reached at, so an exact
match is both the strictest and the most predictable rule. Deployments behind a proxy must configure the
public base URL so the server rebuilds the same string.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import time
from collections.abc import Callable

from pushstr.nostr.errors import AuthError, InvalidEvent
from pushstr.nostr.event import Event, parse_event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind

MAX_HEADER_BYTES = 8 * 1024
DEFAULT_WINDOW = 60
_SCHEME = "nostr"


def _decode_token(token: str) -> bytes:
    """Standard or URL-safe base64, padded or not (clients differ; the NIP example is unpadded)."""
    token = "".join(token.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except ValueError as exc:
        raise AuthError("malformed header: token is not base64") from exc


def _parse_header(header: str | None) -> Event:
    if not header:
        raise AuthError("missing Authorization header")
    if not isinstance(header, str) or len(header) > MAX_HEADER_BYTES:
        raise AuthError("malformed header: too large")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != _SCHEME or not token.strip():
        raise AuthError("malformed header: expected 'Nostr <base64 event>'")
    try:
        return parse_event(_decode_token(token), MAX_HEADER_BYTES)
    except InvalidEvent as exc:
        raise AuthError(f"malformed header: {exc.reason}") from exc


def verify_authorization(
    header: str | None,
    method: str,
    url: str,
    body: bytes | None = None,
    *,
    now: float | None = None,
    window: int = DEFAULT_WINDOW,
    seen: Callable[[str, int], bool] | None = None,
    require_payload: bool = True,
) -> Event:
    """The verified auth event, or `AuthError` with a reason a client can act on.

    `body=None` means the caller does not check the payload; a non-empty body needs a `payload` tag unless
    `require_payload` is False, and a `payload` tag, when present, must always match the body given.
    `seen(event_id, created_at)` is called last, only for an otherwise valid token, so forged tokens cannot
    fill the replay cache; it returns True when the id was already used.
    """
    event = _parse_header(header)
    if event.kind != Kind.HTTP_AUTH:
        raise AuthError("wrong kind")
    if not event.has_valid_id():
        raise AuthError("event id does not match")
    if not event.has_valid_signature():
        raise AuthError("bad signature")
    current = time.time() if now is None else now
    if abs(current - event.created_at) > window:
        raise AuthError("stale or future created_at")
    signed_url = event.first_tag_value("u")
    if signed_url is None:
        raise AuthError("missing u tag")
    if signed_url != url:
        raise AuthError("url mismatch")
    signed_method = event.first_tag_value("method")
    if signed_method is None:
        raise AuthError("missing method tag")
    if signed_method.upper() != method.upper():
        raise AuthError("method mismatch")
    _check_payload(event, body, require_payload)
    if seen is not None and seen(event.id, event.created_at):
        raise AuthError("token replayed")
    return event


def _check_payload(event: Event, body: bytes | None, require_payload: bool) -> None:
    signed_hash = event.first_tag_value("payload")
    if body is None:
        return
    if signed_hash is None:
        if body and require_payload:
            raise AuthError("missing payload tag")
        return
    if signed_hash.lower() != hashlib.sha256(body).hexdigest():
        raise AuthError("payload hash mismatch")


def build_authorization(
    keys: Keys, method: str, url: str, body: bytes | None = None, created_at: int | None = None
) -> str:
    """The full header value `Nostr <base64>` for a request (clients, the CLI and tests use it)."""
    tags = [["u", url], ["method", method.upper()]]
    if body:
        tags.append(["payload", hashlib.sha256(body).hexdigest()])
    event = sign_event(keys, Kind.HTTP_AUTH, "", tags, created_at)
    return "Nostr " + base64.b64encode(event.to_json()).decode("ascii")


class ReplayCache:
    """Bounded in-memory record of used token ids, usable as the `seen` hook of `verify_authorization`.

    An id only needs remembering while its created_at is inside the window (later it fails the time check on its
    own), so entries expire at created_at + window. When `max_entries` is reached the entry closest to expiry is
    dropped: memory stays bounded at the cost of a replay chance for that one nearly expired token. With several
    server instances this is per process; share state in the store if that matters.
    """

    def __init__(
        self, window: int = DEFAULT_WINDOW, max_entries: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._window = window
        self._max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _forget_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, event_id = heapq.heappop(self._heap)
            self._expiry.pop(event_id, None)

    def __call__(self, event_id: str, created_at: int) -> bool:
        """True when `event_id` was seen before (a replay); otherwise remember it and return False."""
        self._forget_expired(self._clock())
        if event_id in self._expiry:
            return True
        while len(self._expiry) >= self._max_entries:
            _, oldest = heapq.heappop(self._heap)
            self._expiry.pop(oldest, None)
        expires = created_at + self._window
        self._expiry[event_id] = expires
        heapq.heappush(self._heap, (expires, event_id))
        return False
