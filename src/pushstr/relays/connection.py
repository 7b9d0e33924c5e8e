"""One outbound relay connection: connect, subscribe, read, authenticate, and reconnect forever.

The connection owns what its relay has been told. The pool hands it the desired `Plan`; while connected the
connection sends only the difference to what that relay already holds, and after a reconnect it sends the whole
plan again with a `since` that reaches back over the time it was away. Events are handed on raw (a dict plus the
relay url): verifying and deduplicating happen once, centrally, in admission.

Nothing a relay sends can stop this task. Malformed frames are counted and dropped; a dead or stuck socket (no
pong, a send that does not finish, an outgoing buffer that fills up) is aborted and the relay is retried after an
exponential backoff with jitter. Because a new connection re-sends the full plan, aborting never loses a
subscription.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import orjson
from prometheus_client import Counter, Gauge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pushstr.config import NostrConfig
from pushstr.logutil import RateLimitedLog, ident
from pushstr.metrics import LoopCounter
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip42 import build_auth_event
from pushstr.relays.planner import EMPTY_PLAN, Plan, Subscription, diff_plans

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any], str], None]

AUTH_REQUIRED = "auth-required:"
RESUME_OVERLAP_SECONDS = 60
"""On reconnect, regular kinds are re-read from this long before the disconnect (relay clocks and ordering)."""
FRAME_OVERHEAD_BYTES = 1024
"""Room for the `["EVENT","<sub id>",…]` envelope around an event of `max_event_bytes`."""
SOCKET_FRAME_FACTOR = 8
"""The websocket layer accepts frames this many times larger than we use, so that an oversized frame is counted
and skipped instead of tearing the connection down; anything larger still closes it (memory bound)."""
CLOSE_TIMEOUT_SECONDS = 2.0
_TEXT_PREVIEW = 200
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

_MESSAGES = LoopCounter("pushstr_relay_messages", "Messages received from relays, by type", ["relay", "type"])
_GARBAGE = Counter("pushstr_relay_garbage", "Relay frames dropped as malformed or oversized", ["relay"])
_SENT = Counter("pushstr_relay_sent", "Messages sent to relays, by type", ["relay", "type"])
_DROPPED = Counter("pushstr_relay_outgoing_overflow", "Connections aborted because the send buffer filled", ["relay"])
_CONNECTS = Counter("pushstr_relay_connects", "Connection attempts, by result", ["relay", "result"])
_CONNECTED = Gauge("pushstr_relay_connected", "1 while the relay is connected", ["relay"])
_SUBSCRIPTIONS = Gauge("pushstr_relay_subscriptions", "Subscriptions the relay holds open for us", ["relay"])
_RECEIVED_TYPES = ("EVENT", "EOSE", "CLOSED", "NOTICE", "OK", "AUTH")
_SENT_TYPES = ("REQ", "CLOSE", "AUTH")


def _forget_metrics(url: str) -> None:
    """Drop the series of a relay that is no longer used, so removed relays do not linger in /metrics."""
    for name in _RECEIVED_TYPES:
        _MESSAGES.remove(url, name)
    for name in _SENT_TYPES:
        _SENT.remove(url, name)
    for result in ("ok", "error"):
        _CONNECTS.remove(url, result)
    for metric in (_GARBAGE, _DROPPED, _CONNECTED, _SUBSCRIPTIONS):
        metric.remove(url)


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): full jitter up to a cap that doubles per attempt.

    Spreading retries uniformly stops many servers (or many relays of one server) from reconnecting in lockstep
    after a relay restart; the cap `high` keeps a long outage from pushing retries out indefinitely.
    """
    cap = min(high, low * 2 ** min(attempt, 64))
    return rng.uniform(low, max(low, cap))


class RelayState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """A snapshot of one relay connection for health pages and tests."""

    url: str
    state: RelayState
    subscriptions: int
    authenticated: bool
    events: int
    eose: int
    notices: int
    closed: int
    auth: int
    garbage: int
    reconnects: int
    connect_failures: int
    reqs_sent: int
    closes_sent: int
    last_error: str | None


@dataclass(slots=True)
class _Counters:
    events: int = 0
    eose: int = 0
    notices: int = 0
    closed: int = 0
    auth: int = 0
    garbage: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    reqs_sent: int = 0
    closes_sent: int = 0


class _BadMessage(Exception):
    """A relay frame that is not a well-formed message we understand."""


@dataclass(eq=False)
class _Session:
    """State that lives exactly as long as one websocket."""

    ws: ClientConnection
    outgoing: asyncio.Queue[tuple[str, bytes]]
    resumed: bool  # a reconnect: subscriptions reach back to the disconnect
    sent: Plan = EMPTY_PLAN
    refused: set[str] = field(default_factory=set)  # closed by the relay; stays closed until re-sent
    auth_event_id: str | None = None
    authenticated: bool = False
    awaiting_auth: set[str] = field(default_factory=set)  # refused with auth-required before we authenticated
    auth_retried: set[str] = field(default_factory=set)  # refused again after authenticating: not retried twice
    abort_reason: str | None = None


class RelayConnection:
    """One relay, one task. `start()` it, feed it plans with `set_plan()`, read `status()`, `await close()`."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        on_event: EventCallback,
        config: NostrConfig,
        *,
        plan: Plan = EMPTY_PLAN,
        stable_seconds: float = 60.0,
        send_timeout: float = 10.0,
        max_outgoing: int = 1000,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """`stable_seconds`: a connection that lasted this long resets the backoff. `max_outgoing` (plus one per
        planned subscription) bounds the messages waiting to be sent; overflowing it aborts the connection, and the
        reconnect re-sends everything."""
        self.url = url
        self._keys = keys
        self._on_event = on_event
        self._config = config
        self._desired = plan
        self._stable_seconds = stable_seconds
        self._send_timeout = send_timeout
        self._max_outgoing = max_outgoing
        self._clock = clock
        self._rng = rng or random.Random()
        self._max_frame = config.max_event_bytes + FRAME_OVERHEAD_BYTES
        self._state = RelayState.CLOSED
        self._counters = _Counters()
        self._last_error: str | None = None
        self._attempt = 0
        self._disconnected_at: float | None = None
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._bad_input = RateLimitedLog(log)

    # -- public API -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._state = RelayState.CONNECTING
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"relay {self.url}")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the task (closing the socket) and wait for it at most `timeout` seconds."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        self._state = RelayState.CLOSED
        _forget_metrics(self.url)

    def set_plan(self, plan: Plan) -> None:
        """Make `plan` the wanted subscriptions; a connected relay is sent the difference right away."""
        self._desired = plan
        session = self._session
        if session is None:
            return
        diff = diff_plans(session.sent, plan)
        session.sent = plan
        for sub_id in diff.close:
            session.refused.discard(sub_id)
            self._enqueue(session, "CLOSE", orjson.dumps(["CLOSE", sub_id]))
        for sub_id, sub in diff.send.items():
            self._send_req(session, sub_id, sub, resume=False)
        self._update_subscription_gauge(session)

    @property
    def connected(self) -> bool:
        return self._state is RelayState.CONNECTED

    def status(self) -> RelayStatus:
        session = self._session
        counters = self._counters
        return RelayStatus(
            url=self.url,
            state=self._state,
            subscriptions=self._open_subscriptions(session) if session else 0,
            authenticated=session.authenticated if session else False,
            events=counters.events,
            eose=counters.eose,
            notices=counters.notices,
            closed=counters.closed,
            auth=counters.auth,
            garbage=counters.garbage,
            reconnects=counters.reconnects,
            connect_failures=counters.connect_failures,
            reqs_sent=counters.reqs_sent,
            closes_sent=counters.closes_sent,
            last_error=self._last_error,
        )

    # -- connection loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        ever_connected = False
        while True:
            self._state = RelayState.CONNECTING
            connected_at: float | None = None
            try:
                async with connect(
                    self.url,
                    open_timeout=self._config.connect_timeout_seconds,
                    close_timeout=CLOSE_TIMEOUT_SECONDS,
                    max_size=self._max_frame * SOCKET_FRAME_FACTOR,
                ) as ws:
                    connected_at = time.monotonic()
                    _CONNECTS.labels(self.url, "ok").inc()
                    resumed, ever_connected = ever_connected, True
                    if resumed:
                        self._counters.reconnects += 1
                    await self._serve(ws, resumed)
            except Exception as exc:
                # Whatever went wrong with this socket (refused, DNS, TLS, handshake, timeout, reset, a relay
                # closing on us), the answer is the same: note it and try again later.
                self._last_error = _describe(exc)
                if connected_at is None:
                    self._counters.connect_failures += 1
                    _CONNECTS.labels(self.url, "error").inc()
                self._bad_input.warning(f"connect:{self.url}", "relay %s: %s", self.url, self._last_error)
            if connected_at is not None and time.monotonic() - connected_at >= self._stable_seconds:
                self._attempt = 0
            self._state = RelayState.BACKOFF
            await asyncio.sleep(self._next_delay())

    def _next_delay(self) -> float:
        delay = backoff_delay(
            self._attempt, self._config.reconnect_min_seconds, self._config.reconnect_max_seconds, self._rng
        )
        self._attempt += 1
        return delay

    async def _serve(self, ws: ClientConnection, resumed: bool) -> None:
        """Subscribe to the whole plan, then read until the socket ends; always ends by raising."""
        session = _Session(ws, asyncio.Queue(), resumed, sent=self._desired)
        self._session = session
        self._state = RelayState.CONNECTED
        _CONNECTED.labels(self.url).set(1)
        log.info("relay %s connected", self.url)
        for sub_id, sub in session.sent.subscriptions.items():
            self._send_req(session, sub_id, sub, resume=resumed)
        self._update_subscription_gauge(session)
        writer = asyncio.get_running_loop().create_task(self._write(session))
        try:
            await self._read(session)
        finally:
            writer.cancel()
            await asyncio.wait({writer})
            self._session = None
            self._disconnected_at = self._clock()
            _CONNECTED.labels(self.url).set(0)
            _SUBSCRIPTIONS.labels(self.url).set(0)
        raise ConnectionAbortedError(session.abort_reason)

    async def _read(self, session: _Session) -> None:
        """Handle frames until the socket closes (normally, by error, or by `_abort`)."""
        try:
            while True:
                frame = await session.ws.recv(decode=False)
                self._handle_frame(session, frame)
        except ConnectionClosed:
            if session.abort_reason is None:
                raise

    async def _write(self, session: _Session) -> None:
        """Send queued messages in order; a send that does not finish in time aborts the connection."""
        while True:
            kind, message = await session.outgoing.get()
            try:
                async with asyncio.timeout(self._send_timeout):
                    await session.ws.send(message, text=True)
            except TimeoutError:
                self._abort(session, "send timed out")
                return
            except ConnectionClosed:
                return
            except Exception as exc:
                # never leave a connection that reads but can no longer send
                self._abort(session, f"send failed: {_describe(exc)}")
                return
            _SENT.labels(self.url, kind).inc()
            if kind == "REQ":
                self._counters.reqs_sent += 1
            elif kind == "CLOSE":
                self._counters.closes_sent += 1

    def _abort(self, session: _Session, reason: str) -> None:
        """Drop the socket at once (no closing handshake that could block); the read loop then ends."""
        if session.abort_reason is None:
            session.abort_reason = reason
            session.ws.transport.abort()

    def _enqueue(self, session: _Session, kind: str, message: bytes) -> None:
        """Queue a message for the writer. The bound grows with the plan, since a (re)connect queues one REQ per
        subscription at once; past it the relay is not reading and the connection is dropped."""
        if session.outgoing.qsize() >= self._max_outgoing + len(session.sent.subscriptions):
            _DROPPED.labels(self.url).inc()
            self._abort(session, "outgoing buffer full")
            return
        session.outgoing.put_nowait((kind, message))

    def _send_req(self, session: _Session, sub_id: str, sub: Subscription, resume: bool) -> None:
        since = self._since(sub.giftwrap, resume)
        filters = [filter_ if "since" in filter_ else {**filter_, "since": since} for filter_ in sub.filters]
        session.refused.discard(sub_id)
        self._enqueue(session, "REQ", orjson.dumps(["REQ", sub_id, *filters]))

    def _since(self, giftwrap: bool, resume: bool) -> int:
        """Where a (re)subscription starts reading.

        Gift wraps carry `created_at` up to two days in the past, so they always get their own long window; a
        shorter `since` would hide fresh ones. Regular kinds read the normal window, and after a reconnect reach
        back to just before the disconnect, but never further than the oldest event we would still push.
        """
        now = int(self._clock())
        if giftwrap:
            return now - self._config.giftwrap_since_window_seconds
        since = now - self._config.since_window_seconds
        if resume and self._disconnected_at is not None:
            since = min(since, int(self._disconnected_at) - RESUME_OVERLAP_SECONDS)
        return max(since, now - self._config.max_event_age_seconds)

    def _open_subscriptions(self, session: _Session) -> int:
        return len(session.sent.subscriptions) - len(session.refused)

    def _update_subscription_gauge(self, session: _Session) -> None:
        _SUBSCRIPTIONS.labels(self.url).set(self._open_subscriptions(session))

    # -- incoming messages ------------------------------------------------------------------------------------

    def _handle_frame(self, session: _Session, frame: bytes | str) -> None:
        try:
            if len(frame) > self._max_frame:
                raise _BadMessage(f"frame of {len(frame)} bytes")
            try:
                message = orjson.loads(frame)
            except orjson.JSONDecodeError as exc:
                raise _BadMessage("not JSON") from exc
            if not isinstance(message, list) or not message or not isinstance(message[0], str):
                raise _BadMessage("not a relay message")
            kind = message[0]
            handler = self._handlers.get(kind)
            if handler is None:
                raise _BadMessage(f"unknown message type {kind[:20]!r}")
            handler(self, session, message)
            _MESSAGES.inc(self.url, kind)
        except _BadMessage as exc:
            self._counters.garbage += 1
            _GARBAGE.labels(self.url).inc()
            self._bad_input.warning(f"garbage:{self.url}", "relay %s sent a bad frame: %s", self.url, exc)

    def _on_event_message(self, session: _Session, message: list[Any]) -> None:
        if len(message) != 3 or not isinstance(message[1], str) or not isinstance(message[2], dict):
            raise _BadMessage("EVENT must be [EVENT, sub id, object]")
        self._counters.events += 1
        try:
            self._on_event(message[2], self.url)
        except Exception as exc:
            # A bug downstream must not take the relay down with it; it is logged, the next event is tried.
            self._bad_input.warning(f"consumer:{self.url}", "event consumer failed: %s", _describe(exc))

    def _on_eose(self, session: _Session, message: list[Any]) -> None:
        if len(message) < 2 or not isinstance(message[1], str):
            raise _BadMessage("EOSE must name a subscription")
        self._counters.eose += 1

    def _on_closed(self, session: _Session, message: list[Any]) -> None:
        if len(message) < 2 or not isinstance(message[1], str):
            raise _BadMessage("CLOSED must name a subscription")
        sub_id = message[1]
        reason = message[2] if len(message) > 2 and isinstance(message[2], str) else ""
        sub = session.sent.subscriptions.get(sub_id)
        if sub is not None and reason.startswith(AUTH_REQUIRED):
            if not session.authenticated:
                session.awaiting_auth.add(sub_id)
                return
            if sub_id not in session.auth_retried:
                # AUTH and this REQ crossed on the wire: one more try now that we are authenticated.
                session.auth_retried.add(sub_id)
                self._send_req(session, sub_id, sub, resume=session.resumed)
                return
        self._counters.closed += 1
        if sub is not None:
            session.refused.add(sub_id)
            self._update_subscription_gauge(session)
        self._bad_input.info(
            f"closed:{self.url}", "relay %s closed subscription %s: %s", self.url, _preview(sub_id), _preview(reason)
        )

    def _on_notice(self, session: _Session, message: list[Any]) -> None:
        if len(message) < 2 or not isinstance(message[1], str):
            raise _BadMessage("NOTICE must carry a string")
        self._counters.notices += 1
        self._bad_input.info(f"notice:{self.url}", "relay %s notice: %s", self.url, _preview(message[1]))

    def _on_auth(self, session: _Session, message: list[Any]) -> None:
        if len(message) < 2 or not isinstance(message[1], str) or not message[1]:
            raise _BadMessage("AUTH must carry a challenge string")
        event = build_auth_event(self._keys, self.url, message[1])
        session.auth_event_id = event.id
        self._counters.auth += 1
        self._enqueue(session, "AUTH", orjson.dumps(["AUTH", event.to_dict()]))

    def _on_ok(self, session: _Session, message: list[Any]) -> None:
        if len(message) < 3 or not isinstance(message[1], str) or not isinstance(message[2], bool):
            raise _BadMessage("OK must be [OK, id, bool, ...]")
        if session.auth_event_id is None or message[1] != session.auth_event_id:
            return  # we publish nothing else; an OK for something else is harmless
        if not message[2]:
            text = message[3] if len(message) > 3 and isinstance(message[3], str) else ""
            self._last_error = f"auth rejected: {_preview(text)}"
            log.warning("relay %s rejected our AUTH: %s", self.url, _preview(text))
            return
        session.authenticated = True
        log.info("relay %s: authenticated", self.url)
        waiting, session.awaiting_auth = session.awaiting_auth, set()
        for sub_id in waiting:
            sub = session.sent.subscriptions.get(sub_id)
            if sub is not None:
                self._send_req(session, sub_id, sub, resume=session.resumed)

    _handlers: ClassVar[dict[str, Callable[[RelayConnection, _Session, list[Any]], None]]] = {
        "EVENT": _on_event_message,
        "EOSE": _on_eose,
        "CLOSED": _on_closed,
        "NOTICE": _on_notice,
        "AUTH": _on_auth,
        "OK": _on_ok,
    }


def _preview(text: str) -> str:
    """Relay-supplied or error text fit for a log line: short, and with any pubkey-like hex replaced by a digest."""
    return _HEX64.sub(lambda match: f"<{ident(match.group(0))}>", text[:_TEXT_PREVIEW])


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {_preview(text)}" if text else type(exc).__name__
