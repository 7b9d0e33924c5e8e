"""One outbound relay connection: connect, read, write and reconnect forever.

This is the socket side only. What the relay is told and how its answers are understood (subscriptions, `since`
windows, CLOSED, NIP-42 AUTH) is the `RelaySession` of the current websocket, which turns received frames into
actions; the connection sends the frames it returns and performs the rest. The pool hands the connection the
desired `Plan`; while connected the session sends only the difference to what the relay already holds, and after
a reconnect a new session sends the whole plan again with a `since` that reaches back over the time it was away.
Events are handed on raw (a dict plus the relay url): verifying and deduplicating happen once, centrally, in
admission.

Nothing a relay sends can stop this task. Malformed frames are counted and dropped; a dead or stuck socket (no
pong, a send that does not finish, an outgoing buffer that fills up) is aborted and the relay is retried after an
exponential backoff with jitter. Because a new connection re-sends the full plan, aborting never loses a
subscription.

Each connection counts what happens to it in one place (`_Counters`); `status()` and the Prometheus series are
both read from there, the latter only when /metrics is scraped.

Nearly every frame a relay sends is one complete text message, an EVENT. The websocket (`_FrameConnection`)
hands such frames to the session as the socket's data is parsed, instead of queueing each one for `recv()` and
waking the read loop for it: on a firehose that queueing cost about as much as the session's own work per frame.
Anything else (fragmented or binary messages, or a frame behind them) goes through `recv()` as before, so
messages keep their order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, assert_never

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from pushstr.config import NostrConfig
from pushstr.logutil import RateLimitedLog, ident, shown_url
from pushstr.nostr.keys import Keys
from pushstr.relays.planner import EMPTY_PLAN, FIREHOSE_SUBSCRIPTION, Plan
from pushstr.relays.session import (
    FRAME_OVERHEAD_BYTES,
    MAX_ADDRESSED_EVENT_BYTES,
    MESSAGE_TYPES,
    SENT_TYPES,
    Action,
    Authenticated,
    AuthRejected,
    Closed,
    EventReceived,
    Garbage,
    Notice,
    Outgoing,
    Received,
    Refused,
    RelaySession,
)

log = logging.getLogger(__name__)


class EventCallback(Protocol):
    """Where a connection hands each event: `size_checked=False` for one from a frame larger than
    `max_event_bytes` allows (see `session.MAX_ADDRESSED_EVENT_BYTES`), so that admission checks its size."""

    def __call__(self, event: dict[str, Any], url: str, /, *, size_checked: bool = True) -> None: ...


RefusalCallback = Callable[[int], None]
"""Told how many subscriptions the relay seems to hold at most, when it refused one for holding too many."""
FirehoseRefusalCallback = Callable[[], None]
"""Told that the relay closed the firehose subscription (for another reason than capacity or AUTH)."""

SOCKET_FRAME_FACTOR = 8
"""The websocket layer accepts frames this many times larger than we use, so that an oversized frame is counted
and skipped instead of tearing the connection down; anything larger still closes it (memory bound)."""
CLOSE_TIMEOUT_SECONDS = 2.0
_TEXT_PREVIEW = 200
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


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
    """Everything counted about one relay, over all its websockets: plain ints, cheap on the per-frame path."""

    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESSAGE_TYPES, 0))
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SENT_TYPES, 0))
    garbage: int = 0
    refused: int = 0  # subscriptions the relay closed, or refused with a NOTICE
    overflows: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0


_TEXT = Opcode.TEXT


class _FrameConnection(ClientConnection):
    """A client websocket that gives each complete text frame to `on_text` as soon as it is parsed.

    Only while nothing waits in the message queue (a fragmented or binary message the read loop has not taken yet),
    so that the order of messages is kept; every other frame takes websockets' own path. `on_text` must not raise.
    """

    on_text: Callable[[bytes | bytearray | memoryview], None] | None = None

    def process_event(self, event: Event) -> None:
        on_text = self.on_text
        if (
            on_text is not None
            and type(event) is Frame
            and event.opcode is _TEXT
            and event.fin
            and not self.recv_messages.frames
        ):
            on_text(event.data)
            return
        super().process_event(event)


@dataclass(eq=False)
class _Socket:
    """One websocket and what lives exactly as long as it."""

    ws: ClientConnection
    session: RelaySession
    outgoing: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
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
        on_refused: RefusalCallback | None = None,
        on_firehose_refused: FirehoseRefusalCallback | None = None,
        label: str | None = None,
    ) -> None:
        """`stable_seconds`: a connection that lasted this long resets the backoff. `max_outgoing` (plus one per
        planned subscription) bounds the messages waiting to be sent; overflowing it aborts the connection, and the
        reconnect re-sends everything. `on_refused` hears of subscriptions refused for holding too many, so that
        the owner can plan smaller; the refused ones are re-sent with the next plan. `on_firehose_refused` hears
        that the relay closed the firehose subscription, so that the owner can ask for pubkey lists instead.
        `label` names the relay in metrics (default: the URL without user info or query)."""
        self.url = url
        self.label = label or shown_url(url)
        self._keys = keys
        self._on_event = on_event
        self._config = config
        self._desired = plan
        self._stable_seconds = stable_seconds
        self._send_timeout = send_timeout
        self._max_outgoing = max_outgoing
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_refused = on_refused
        self._on_firehose_refused = on_firehose_refused
        self._firehose_events = 0  # of sockets that ended since `take_firehose_events`
        self._max_socket_frame = max(
            (config.max_event_bytes + FRAME_OVERHEAD_BYTES) * SOCKET_FRAME_FACTOR,
            2 * (MAX_ADDRESSED_EVENT_BYTES + FRAME_OVERHEAD_BYTES),  # an event addressed to the server may be larger
        )
        self._state = RelayState.CLOSED
        self._counters = _Counters()
        self._last_error: str | None = None
        self._attempt = 0
        self._disconnected_at: float | None = None
        self._socket: _Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._bad_input = RateLimitedLog(log)

    # -- public API -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._state = RelayState.CONNECTING
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"relay {self.url}")
            _METRICS.connections.add(self)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the task (closing the socket) and wait for it at most `timeout` seconds."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        self._state = RelayState.CLOSED
        _METRICS.connections.discard(self)  # a removed relay does not linger in /metrics

    def set_plan(self, plan: Plan) -> None:
        """Make `plan` the wanted subscriptions; a connected relay is sent the difference right away (reaching back
        further when the plan switches between pubkey lists and the firehose: `RelaySession.set_plan`)."""
        switch = plan.firehose != self._desired.firehose
        self._desired = plan
        socket = self._socket
        if socket is not None:
            self._send(socket, socket.session.set_plan(plan, switch=switch))

    def take_firehose_events(self) -> int:
        """Live events on the firehose subscription since the last call: what the pool measures its rate by."""
        count, self._firehose_events = self._firehose_events, 0
        socket = self._socket
        if socket is not None:
            count += socket.session.firehose_events
            socket.session.firehose_events = 0
        return count

    @property
    def connected(self) -> bool:
        return self._state is RelayState.CONNECTED

    def status(self) -> RelayStatus:
        session = self._socket.session if self._socket else None
        counters = self._counters
        return RelayStatus(
            url=self.url,
            state=self._state,
            subscriptions=session.open_subscriptions if session else 0,
            authenticated=session.authenticated if session else False,
            events=counters.received["EVENT"],
            eose=counters.received["EOSE"],
            notices=counters.received["NOTICE"],
            closed=counters.refused,
            auth=counters.received["AUTH"],
            garbage=counters.garbage,
            reconnects=counters.reconnects,
            connect_failures=counters.connect_failures,
            reqs_sent=counters.sent["REQ"],
            closes_sent=counters.sent["CLOSE"],
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
                    max_size=self._max_socket_frame,
                    create_connection=_FrameConnection,
                ) as ws:
                    connected_at = time.monotonic()
                    self._counters.connects += 1
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
        session = RelaySession(
            self.url,
            self._keys,
            self._config,
            self._desired,
            resumed=resumed,
            disconnected_at=self._disconnected_at,
            clock=self._clock,
        )
        socket = _Socket(ws, session)
        self._socket = socket
        self._state = RelayState.CONNECTED
        log.info("relay %s connected", self.url)
        self._send(socket, session.start())
        writer = asyncio.get_running_loop().create_task(self._write(socket))
        try:
            await self._read(socket)
        finally:
            writer.cancel()
            await asyncio.wait({writer})
            self._socket = None
            self._firehose_events += session.firehose_events
            self._disconnected_at = self._clock()
        raise ConnectionAbortedError(socket.abort_reason)

    async def _read(self, socket: _Socket) -> None:
        """Handle frames until the socket closes (normally, by error, or by `_abort`): single text frames as they
        are parsed (`_FrameConnection`), the rest as `recv()` returns them."""
        ws = socket.ws
        assert isinstance(ws, _FrameConnection)
        received = self._counters.received
        receive = socket.session.receive

        def handle(frame: bytes | bytearray | memoryview) -> None:
            for action in receive(frame):
                if type(action) is EventReceived:  # the per-event path, without the dispatch below
                    received["EVENT"] += 1
                    self._deliver(action)
                else:
                    self._perform(socket, action)

        def on_text(frame: bytes | bytearray | memoryview) -> None:
            if socket.abort_reason is not None:
                return  # frames parsed with the one that ended the socket
            try:
                handle(frame)
            except Exception as exc:  # called by the socket's parser, which must not see it: end this socket
                self._abort(socket, f"frame handling failed: {_describe(exc)}")

        ws.on_text = on_text
        try:
            while True:
                handle(await ws.recv(decode=False))
        except ConnectionClosed:
            if socket.abort_reason is None:
                raise
        finally:
            ws.on_text = None

    async def _write(self, socket: _Socket) -> None:
        """Send queued messages in order; a send that does not finish in time aborts the connection."""
        while True:
            kind, message = await socket.outgoing.get()
            try:
                async with asyncio.timeout(self._send_timeout):
                    await socket.ws.send(message, text=True)
            except TimeoutError:
                self._abort(socket, "send timed out")
                return
            except ConnectionClosed:
                return
            except Exception as exc:
                # never leave a connection that reads but can no longer send
                self._abort(socket, f"send failed: {_describe(exc)}")
                return
            self._counters.sent[kind] += 1

    def _abort(self, socket: _Socket, reason: str) -> None:
        """Drop the socket at once (no closing handshake that could block); the read loop then ends."""
        if socket.abort_reason is None:
            socket.abort_reason = reason
            socket.ws.transport.abort()

    def _send(self, socket: _Socket, frames: list[Outgoing]) -> None:
        for frame in frames:
            self._enqueue(socket, frame)

    def _enqueue(self, socket: _Socket, frame: Outgoing) -> None:
        """Queue a frame for the writer. The bound grows with the plan, since a (re)connect queues one REQ per
        subscription at once; past it the relay is not reading and the connection is dropped. An aborted socket
        sends nothing more: its frames are dropped, and the reconnect re-sends the plan."""
        if socket.abort_reason is not None:
            return
        if socket.outgoing.qsize() >= self._max_outgoing + socket.session.plan.req_count:
            self._counters.overflows += 1
            self._abort(socket, "outgoing buffer full")
            return
        socket.outgoing.put_nowait(frame)

    # -- what the session asks for ----------------------------------------------------------------------------

    def _perform(self, socket: _Socket, action: Action) -> None:
        match action:
            case EventReceived():
                self._counters.received["EVENT"] += 1
                self._deliver(action)
            case Received():
                self._counters.received[action.kind] += 1
            case Outgoing():
                self._enqueue(socket, action)
            case Garbage():
                self._counters.garbage += 1
                self._bad_input.warning(f"garbage:{self.url}", "relay %s sent a bad frame: %s", self.url, action.reason)
            case Notice():
                self._bad_input.info(f"notice:{self.url}", "relay %s notice: %s", self.url, _preview(action.text))
            case Closed():
                self._counters.refused += 1
                if action.sub_id == FIREHOSE_SUBSCRIPTION and self._desired.firehose and self._on_firehose_refused:
                    self._on_firehose_refused()
                self._bad_input.info(
                    f"closed:{self.url}",
                    "relay %s closed subscription %s: %s",
                    self.url,
                    _preview(action.sub_id),
                    _preview(action.reason),
                )
            case Refused():
                self._counters.refused += 1
                self._bad_input.warning(
                    f"refused:{self.url}",
                    "relay %s refused a subscription (%s), holding about %d: planning smaller",
                    self.url,
                    _preview(action.reason),
                    action.held,
                )
                if self._on_refused is not None:
                    self._on_refused(action.held)
            case Authenticated():
                log.info("relay %s: authenticated", self.url)
            case AuthRejected():
                self._last_error = f"auth rejected: {_preview(action.text)}"
                log.warning("relay %s rejected our AUTH: %s", self.url, _preview(action.text))
            case _:
                assert_never(action)

    def _deliver(self, received: EventReceived) -> None:
        try:
            if received.oversized:
                self._on_event(received.event, self.url, size_checked=False)
            else:
                self._on_event(received.event, self.url)
        except Exception as exc:
            # A bug downstream must not take the relay down with it; it is logged, the next event is tried.
            self._bad_input.warning(f"consumer:{self.url}", "event consumer failed: %s", _describe(exc))

    def _samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """(metric, label values, value) for every series of this relay; see `_FAMILIES`."""
        url, counters = self.label, self._counters
        for kind, count in counters.received.items():
            yield "pushstr_relay_messages", (url, kind), count
        yield "pushstr_relay_garbage", (url,), counters.garbage
        yield "pushstr_relay_refused", (url,), counters.refused
        for kind, count in counters.sent.items():
            yield "pushstr_relay_sent", (url, kind), count
        yield "pushstr_relay_outgoing_overflow", (url,), counters.overflows
        yield "pushstr_relay_connects", (url, "ok"), counters.connects
        yield "pushstr_relay_connects", (url, "error"), counters.connect_failures
        socket = self._socket
        yield "pushstr_relay_connected", (url,), 0 if socket is None else 1
        yield "pushstr_relay_subscriptions", (url,), 0 if socket is None else socket.session.open_subscriptions


_FAMILIES: dict[str, tuple[type[CounterMetricFamily | GaugeMetricFamily], str, tuple[str, ...]]] = {
    "pushstr_relay_messages": (CounterMetricFamily, "Messages received from relays, by type", ("relay", "type")),
    "pushstr_relay_garbage": (CounterMetricFamily, "Relay frames dropped as malformed or oversized", ("relay",)),
    "pushstr_relay_refused": (
        CounterMetricFamily,
        "Subscriptions a relay closed or refused (a NOTICE after a REQ)",
        ("relay",),
    ),
    "pushstr_relay_sent": (CounterMetricFamily, "Messages sent to relays, by type", ("relay", "type")),
    "pushstr_relay_outgoing_overflow": (
        CounterMetricFamily,
        "Connections aborted because the send buffer filled",
        ("relay",),
    ),
    "pushstr_relay_connects": (CounterMetricFamily, "Connection attempts, by result", ("relay", "result")),
    "pushstr_relay_connected": (GaugeMetricFamily, "Connections open to the relay", ("relay",)),
    "pushstr_relay_subscriptions": (GaugeMetricFamily, "Subscriptions the relay holds open for us", ("relay",)),
}


class _RelayMetrics:
    """The Prometheus view of every started connection's `_Counters`, built when /metrics is scraped.

    Reading the connections' own counters (instead of keeping Prometheus counters beside them) means status pages
    and /metrics cannot disagree and a frame costs one int increment. A closed connection's series disappear with
    it; two connections to one url (a removed relay re-added while the old one is still closing) are summed.
    """

    def __init__(self) -> None:
        self.connections: set[RelayConnection] = set()

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so that the registry can check names without a scrape."""
        return iter(_empty_families().values())

    def collect(self) -> Iterator[Metric]:
        totals: dict[tuple[str, tuple[str, ...]], float] = {}
        for connection in list(self.connections):
            for name, labels, value in connection._samples():
                totals[name, labels] = totals.get((name, labels), 0.0) + value
        families = _empty_families()
        for (name, labels), value in totals.items():
            families[name].add_metric(list(labels), value)
        return iter(families.values())


def _empty_families() -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
    return {name: family(name, text, labels=labels) for name, (family, text, labels) in _FAMILIES.items()}


_METRICS = _RelayMetrics()
REGISTRY.register(_METRICS)


def _preview(text: str) -> str:
    """Relay-supplied or error text fit for a log line: short, and with any pubkey-like hex replaced by a digest."""
    return _HEX64.sub(lambda match: f"<{ident(match.group(0))}>", text[:_TEXT_PREVIEW])


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {_preview(text)}" if text else type(exc).__name__
