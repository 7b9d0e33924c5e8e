"""One look at one relay, as the gateway will meet it: its NIP-11 document, a connection, one REQ and NIP-42 AUTH.

The REQ asks for what pushstr asks every relay for, gift wraps addressed to the server key (`limit` 1), so a
relay that serves kind 1059 only to authenticated readers shows that here. When the relay sends an AUTH
challenge the probe answers it with the server key, as the relay session does, and reports whether the relay
took it. Nothing is published.

The relay's clock is read from the HTTP `Date` header of its NIP-11 answer, the one timestamp a relay gives
about now: the newest event's `created_at` says when someone wrote it, and gift wraps are backdated on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from pushstr.logutil import ident
from pushstr.net.httpclient import ResponseTooLarge, get_bounded
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.nostr.nip42 import build_auth_event
from pushstr.ops.report import shown_text
from pushstr.relays.limits import MAX_DOCUMENT_BYTES, RelayLimits, document_url, parse_nip11

SUBSCRIPTION_ID = "pushstr-doctor"
#: The largest frame read from a relay: one gift wrap at most, with room to spare.
MAX_FRAME_BYTES = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def relay_text(text: object) -> str:
    """A relay's own words, fit to print: one short line, and any pubkey-like hex replaced by a digest."""
    return _HEX64.sub(lambda match: f"<{ident(match.group(0))}>", shown_text(str(text), 120))


def describe_error(exc: BaseException) -> str:
    text = shown_text(str(exc), 120)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Nip11:
    """What the relay's information document says, and when the relay answered (its `Date` header)."""

    status: int
    limits: RelayLimits | None
    software: str | None
    auth_required: bool
    payment_required: bool
    skew_seconds: float | None
    """Our clock minus the relay's (positive: ours is ahead), from `Date`; None without that header."""
    skew_tolerance: float


@dataclass(slots=True)
class RelayProbe:
    """What one probe found. `error` is set when no connection could be made or the relay did not answer."""

    url: str
    nip11: Nip11 | None = None
    nip11_error: str | None = None
    connect_ms: float | None = None
    answer_ms: float | None = None
    challenged: bool = False
    auth_required: bool = False
    auth_accepted: bool | None = None
    auth_reason: str = ""
    closed_reason: str | None = None
    error: str | None = None


def clock_skew(date_header: str, sent_at: float, received_at: float) -> tuple[float, float] | None:
    """(our clock minus the relay's, the uncertainty) from a `Date` header and when the request went and came.

    `Date` has whole seconds, truncated, so the relay's time lay in [Date, Date + 1) when it answered, and it
    answered somewhere between our send and our receive: both spans widen the tolerance.
    """
    try:
        stamp = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    middle = (sent_at + received_at) / 2
    return middle - (stamp + 0.5), 0.5 + (received_at - sent_at) / 2


def _software(software: object, version: object) -> str | None:
    """`strfry 1.0.4` from NIP-11's `software` (a repository URL, by the NIP) and `version`."""
    name = str(software).rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") if software else ""
    text = f"{name} {version}".strip() if version else name
    return relay_text(text) if text else None


async def fetch_nip11(url: str, timeout: float) -> Nip11:
    """GET the relay's NIP-11 document (`Accept: application/nostr+json`), bounded in size and time."""
    async with (
        asyncio.timeout(timeout),
        httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False) as client,
    ):
        sent_at = time.time()
        response = await get_bounded(
            client, document_url(url), headers={"accept": "application/nostr+json"}, limit=MAX_DOCUMENT_BYTES
        )
        received_at = time.time()
    skew = clock_skew(response.headers.get("date", ""), sent_at, received_at)
    limits: RelayLimits | None = None
    software: str | None = None
    auth_required = payment_required = False
    if response.status_code == 200:
        limits = parse_nip11(response.content)
        try:
            document: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            software = _software(document.get("software"), document.get("version"))
            limitation = document.get("limitation")
            if isinstance(limitation, dict):
                auth_required = limitation.get("auth_required") is True
                payment_required = limitation.get("payment_required") is True
    return Nip11(
        response.status_code,
        limits,
        software,
        auth_required,
        payment_required,
        skew[0] if skew else None,
        skew[1] if skew else 0.0,
    )


async def _next(ws: ClientConnection) -> list[Any] | None:
    """The next relay message as a list, or None for a frame that is not one (skipped, as the session does)."""
    frame = await ws.recv(decode=False)
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, list) and message and isinstance(message[0], str) else None


class _Conversation:
    """One websocket to the relay: the REQ, the AUTH challenges seen on the way, the AUTH answer."""

    def __init__(self, ws: ClientConnection, url: str, keys: Keys, probe: RelayProbe) -> None:
        self._ws = ws
        self._url = url
        self._keys = keys
        self._probe = probe
        self._challenges: list[str] = []
        self._request: list[Any] = [
            "REQ",
            SUBSCRIPTION_ID,
            {"kinds": [int(Kind.GIFT_WRAP)], "#p": [keys.public_hex], "limit": 1},
        ]

    def _noticed(self, message: list[Any]) -> bool:
        """Whether `message` is an AUTH challenge (kept for the answer)."""
        if len(message) >= 2 and message[0] == "AUTH" and isinstance(message[1], str):
            self._probe.challenged = True
            self._challenges.append(message[1])
            return True
        return False

    async def ask(self) -> tuple[str, str]:
        """Send the REQ and read until its EOSE or CLOSED: ("eose", "") or ("closed", reason)."""
        await self._ws.send(orjson.dumps(self._request).decode())
        while True:
            message = await _next(self._ws)
            if message is None or self._noticed(message) or len(message) < 2 or message[1] != SUBSCRIPTION_ID:
                continue  # the event asked for, a NOTICE, anything else: not the answer awaited
            if message[0] == "EOSE":
                return "eose", ""
            if message[0] == "CLOSED":
                return "closed", str(message[2]) if len(message) > 2 else ""

    async def authenticate(self) -> bool:
        """Answer the newest AUTH challenge (waiting for one if none came yet); whether the relay said OK."""
        while not self._challenges:
            message = await _next(self._ws)
            if message is not None:
                self._noticed(message)
        event = build_auth_event(self._keys, self._url, self._challenges[-1])
        await self._ws.send(orjson.dumps(["AUTH", event.to_dict()]).decode())
        while True:
            message = await _next(self._ws)
            if message is not None and len(message) >= 3 and message[0] == "OK" and message[1] == event.id:
                self._probe.auth_reason = relay_text(message[3]) if len(message) > 3 else ""
                return message[2] is True

    async def close(self) -> None:
        await self._ws.send(orjson.dumps(["CLOSE", SUBSCRIPTION_ID]).decode())


async def _talk(url: str, keys: Keys, timeout: float, probe: RelayProbe) -> None:
    started = time.monotonic()
    async with connect(url, open_timeout=timeout, close_timeout=1.0, max_size=MAX_FRAME_BYTES) as ws:
        probe.connect_ms = (time.monotonic() - started) * 1000
        talk = _Conversation(ws, url, keys, probe)
        async with asyncio.timeout(timeout):
            asked = time.monotonic()
            answer, reason = await talk.ask()
            probe.answer_ms = (time.monotonic() - asked) * 1000
            if answer == "closed" and reason.startswith("auth-required:"):
                probe.auth_required = True
                probe.auth_accepted = await talk.authenticate()
                if probe.auth_accepted:
                    answer, reason = await talk.ask()
        if answer == "closed":
            probe.closed_reason = relay_text(reason) or "(no reason given)"
        if probe.challenged and not probe.auth_required:
            # The relay served the REQ and asked for AUTH besides: how it takes the server key is worth knowing,
            # but a relay that never answers the AUTH is not a relay that fails pushstr.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    probe.auth_accepted = await talk.authenticate()
        await talk.close()


async def probe_relay(url: str, keys: Keys, timeout: float) -> RelayProbe:
    """Everything `RelayProbe` holds about `url`, each step within `timeout` seconds; never raises."""
    probe = RelayProbe(url)
    try:
        probe.nip11 = await fetch_nip11(url, timeout)
    except (httpx.HTTPError, OSError, ValueError, TimeoutError, ResponseTooLarge) as exc:
        probe.nip11_error = "no answer in time" if isinstance(exc, TimeoutError) else describe_error(exc)
    try:
        await _talk(url, keys, timeout, probe)
    except TimeoutError:
        probe.error = f"no answer within {timeout:g} s"
    except Exception as exc:  # refused, DNS, TLS, handshake, a relay closing on us: all are the answer
        probe.error = describe_error(exc)
    return probe


def median_skew(probes: list[RelayProbe]) -> tuple[float, float, int] | None:
    """(median skew, the largest tolerance, relays with a `Date`) over the probes that had one."""
    dated = [probe.nip11 for probe in probes if probe.nip11 is not None and probe.nip11.skew_seconds is not None]
    if not dated:
        return None
    skews = [info.skew_seconds for info in dated if info.skew_seconds is not None]
    return statistics.median(skews), max(info.skew_tolerance for info in dated), len(dated)
