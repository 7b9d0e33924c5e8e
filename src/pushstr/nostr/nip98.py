"""NIP-98 HTTP auth: `Authorization: Nostr <base64(kind 27235 event)>`.

A token authorizes exactly one request: its `u` tag must name the absolute request URL, its `method` tag the
HTTP method, its `payload` tag the body's sha256, its created_at must be within the window, and (with a `seen`
hook) its id must not have been used before.

`u` is compared after `normalize_url`: scheme and host lowercased, the scheme's default port dropped, one
trailing slash of the path ignored. Those are the differences clients and frameworks produce for the very same
request (`HTTPS://Push.Example:443/register/`), and none of them can name another resource. Everything else is
compared exactly: path case, percent-encoding and the query (a different query is a different request), and
the scheme (a token signed for http must not work over https, nor the other way round). Deployments behind a
proxy configure the public base URL so the server rebuilds the URL the client saw.

Every refusal is an `AuthError` whose reason names the rule that failed and, where it helps, what the server
expected: the reason is meant for the client's developer.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import math
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson

from pushstr.nostr.errors import AuthError, InvalidEvent
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind

MAX_HEADER_BYTES = 8 * 1024
DEFAULT_WINDOW = 60
_SCHEME = "nostr"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EXPECTED_HEADER = "'Authorization: Nostr <base64 of a signed kind 27235 event>'"


def normalize_url(url: str) -> str:
    """`url` in the form `u` tags are compared in (see the module docstring).

    A string that does not parse as an absolute URL is returned unchanged, so it can only equal itself.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{host}"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    path = parts.path.removesuffix("/")
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{scheme}://{netloc}{path}{query}{fragment}"


def _decode_token(token: str) -> bytes:
    """Standard or URL-safe base64, padded or not (clients differ; the NIP example is unpadded)."""
    token = "".join(token.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except ValueError as exc:
        raise AuthError("Authorization token is not base64") from exc


def _parse_header(header: str | None) -> Event:
    if not header:
        raise AuthError(f"missing Authorization header: send {_EXPECTED_HEADER}")
    if not isinstance(header, str) or len(header) > MAX_HEADER_BYTES:
        raise AuthError(f"Authorization header is larger than {MAX_HEADER_BYTES} bytes")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != _SCHEME:
        raise AuthError(f"Authorization scheme is not Nostr: send {_EXPECTED_HEADER}")
    if not token.strip():
        raise AuthError(f"Authorization header has no token after 'Nostr': send {_EXPECTED_HEADER}")
    try:
        decoded = orjson.loads(_decode_token(token))
    except orjson.JSONDecodeError:
        raise AuthError("Authorization token is not JSON: base64-encode the signed event's JSON") from None
    try:
        return Event.from_dict(decoded)
    except InvalidEvent as exc:
        raise AuthError(f"Authorization event is malformed: {exc.reason}") from exc


REPLAYED = "token replayed: an authorization event is good for one request; sign a new one"


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

    `url` is the absolute URL the request reached, as the client saw it. `body=None` means the caller does not
    check the payload; a non-empty body needs a `payload` tag unless `require_payload` is False, and a `payload`
    tag, when present, must always match the body given. `seen(event_id, created_at)` is called last, only for
    an otherwise valid token, so forged tokens cannot fill the replay cache; it returns True when the id was
    already used.
    """
    event = _parse_header(header)
    _check_event(event)
    _check_time(event, time.time() if now is None else now, window)
    _check_url(event, url)
    _check_method(event, method)
    _check_payload(event, body, require_payload)
    if seen is not None and seen(event.id, event.created_at):
        raise AuthError(REPLAYED)
    return event


def _check_event(event: Event) -> None:
    if event.kind != Kind.HTTP_AUTH:
        raise AuthError(f"wrong kind {event.kind}: a NIP-98 authorization is kind {int(Kind.HTTP_AUTH)}")
    if not event.has_valid_id():
        raise AuthError("bad id: the event id is not the sha256 of the serialized event")
    if not event.has_valid_signature():
        raise AuthError("bad signature: sig does not verify for the event's pubkey")


def _check_time(event: Event, now: float, window: int) -> None:
    skew = event.created_at - now
    accepted = f"tokens are accepted within ±{window} s of the server's clock (now {int(now)})"
    if skew < -window:
        raise AuthError(f"token too old: created_at is {math.ceil(-skew)} s in the past; {accepted}")
    if skew > window:
        raise AuthError(f"token too far in the future: created_at is {math.ceil(skew)} s ahead; {accepted}")


def _only_tag(event: Event, name: str) -> str | None:
    """The value of the event's one `name` tag; a second one is refused, since another reader may take it."""
    values = event.tag_values(name)
    if len(values) > 1:
        raise AuthError(f"more than one {name} tag: an authorization names one {name}")
    return values[0] if values else None


def _check_url(event: Event, url: str) -> None:
    expected = normalize_url(url)
    signed = _only_tag(event, "u")
    if signed is None:
        raise AuthError(f"missing u tag: sign the absolute request URL, expected {expected}")
    if normalize_url(signed) != expected:
        raise AuthError(f"u tag does not match the request URL: expected {expected}")


def _check_method(event: Event, method: str) -> None:
    expected = method.upper()
    signed = _only_tag(event, "method")
    if signed is None:
        raise AuthError(f"missing method tag: expected {expected}")
    if signed != expected:  # NIP-98 writes the method as HTTP does, in capitals
        raise AuthError(f"method tag does not match the request: expected {expected}")


def _check_payload(event: Event, body: bytes | None, require_payload: bool) -> None:
    signed_hash = event.first_tag_value("payload")
    if body is None:
        return
    if signed_hash is None:
        if body and require_payload:
            raise AuthError("missing payload tag: a request with a body signs the hex sha256 of the body")
        return
    if signed_hash.lower() != hashlib.sha256(body).hexdigest():
        raise AuthError("payload tag does not match the sha256 of the body: hash the exact bytes sent")


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
