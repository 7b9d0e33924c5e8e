"""The NIP-01/NIP-42 protocol state of one relay websocket, with no I/O: frames in, actions out.

Keeping the protocol apart from the socket is what makes it testable frame by frame: `RelaySession` never
touches a socket, a task or a timer. The connection owning the websocket sends what `start()` and `set_plan()`
return, feeds every received frame to `receive()`, and performs the actions that come back (send a frame, hand
an event on, count garbage, log a notice). The session lives exactly as long as one websocket; what must outlast
a reconnect (when the last socket dropped, whether this is a resume) is passed in.

Everything a relay sends is untrusted: a frame that is not a well-formed message we understand becomes a
`Garbage` action, never an exception.

Plans are made to fit the relay's limits, but a relay may hold fewer subscriptions than it (or strfry's defaults)
promised. Such a refusal is a `Refused` action, so that the owner plans smaller, and the refused subscriptions are
re-sent with the next plan: a CLOSED that says so names its subscription; strfry's bare NOTICE names none, so
every REQ still awaiting its EOSE counts as maybe refused until that EOSE arrives.

A relay answers a filter with a bounded number of stored events, so a catch-up that comes back full is read
further, page by page (`paging`), on one extra subscription.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import orjson

from pushstr.config import NostrConfig
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip42 import build_auth_event
from pushstr.relays.paging import Pager, Reading, is_page
from pushstr.relays.planner import FIREHOSE_SUBSCRIPTION, Plan, Subscription, asks_giftwrap, diff_plans

AUTH_REQUIRED = "auth-required:"
RESUME_OVERLAP_SECONDS = 60
"""On reconnect, regular kinds are re-read from this long before the disconnect (relay clocks and ordering)."""
FRAME_OVERHEAD_BYTES = 1024
"""Room for the `["EVENT","<sub id>",…]` envelope around an event of `max_event_bytes`."""
MAX_ADDRESSED_EVENT_BYTES = 160 * 1024
"""The largest event any dialect takes when it is addressed to the server (a full Marmot Push trigger is about
110 KB): a frame up to this size is parsed, marked `oversized`, and admission applies the per-event limit."""
MESSAGE_TYPES = ("EVENT", "EOSE", "CLOSED", "NOTICE", "OK", "AUTH")
"""The relay-to-client messages we understand; any other type is garbage."""
SENT_TYPES = ("REQ", "CLOSE", "AUTH")
"""The messages a session sends: the types of its `Outgoing` frames."""
CAPACITY_WORDS = ("too many", "maximum", "max subscriptions", "subscription limit", "subscriptions limit")
"""Words of a refusal that is about how many subscriptions we hold (strfry: "ERROR: too many concurrent REQs"),
which a smaller plan cures, unlike "blocked:", "restricted:" or a rate limit."""


class Outgoing(NamedTuple):
    """A frame to send, with its message type so that the socket side can count what it sent by type."""

    kind: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Received:
    """A well-formed message of type `kind` (not EVENT: see `receive`) was handled, for per-type counts."""

    kind: str


@dataclass(slots=True)
class EventReceived:
    """An event object (unverified: admission checks it) that arrived on subscription `sub_id`.

    Not frozen, unlike the other actions: a frozen dataclass takes twice as long to build, and this one is built
    for every event."""

    event: dict[str, Any]
    sub_id: str
    oversized: bool = False
    """The frame was larger than `max_event_bytes` allows: only an event addressed to the server may pass."""


@dataclass(frozen=True, slots=True)
class Garbage:
    """A frame that was dropped, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Human-readable text from the relay: worth a (rate-limited, redacted) log line, nothing more."""

    text: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The relay ended subscription `sub_id` for good (an id we never sent is reported too, but changes nothing)."""

    sub_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The relay refused subscriptions for holding too many: a CLOSED for `sub_id` with such a reason, or a NOTICE
    (`sub_id` None: strfry names none) while REQs awaited their EOSE. `held` is how many subscriptions the relay
    seems to hold at most: the budget the next plan of this connection must fit in."""

    sub_id: str | None
    reason: str
    held: int


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The relay accepted our AUTH; subscriptions it held back for that have been re-sent."""


@dataclass(frozen=True, slots=True)
class AuthRejected:
    """The relay refused our AUTH (with its reason); subscriptions held back for it stay unsent."""

    text: str


Action = Received | EventReceived | Outgoing | Garbage | Notice | Closed | Refused | Authenticated | AuthRejected
_RECEIVED = {kind: Received(kind) for kind in MESSAGE_TYPES}  # immutable, so shared: nothing allocated per frame


class _BadMessage(Exception):
    """A relay frame that is not a well-formed message we understand."""


class RelaySession:
    """What one relay has been told over one websocket, and how it answered.

    `plan` is what the relay is to hold. `resumed` marks a reconnect, whose subscriptions reach back to
    `disconnected_at` (when the previous socket dropped); `clock` gives the wall time that `since` is based on.
    """

    def __init__(
        self,
        url: str,
        keys: Keys,
        config: NostrConfig,
        plan: Plan,
        *,
        resumed: bool = False,
        disconnected_at: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._keys = keys
        self._config = config
        self._plan = plan
        self._resumed = resumed
        self._disconnected_at = disconnected_at
        self._clock = clock
        self._event_frame = config.max_event_bytes + FRAME_OVERHEAD_BYTES
        self._max_frame = max(config.max_event_bytes, MAX_ADDRESSED_EVENT_BYTES) + FRAME_OVERHEAD_BYTES
        self._refused: set[str] = set()  # closed by the relay; stays closed until re-sent
        self._pending: set[str] = set()  # sent, neither EOSE nor CLOSED yet
        self._overflowed: set[str] = set()  # maybe refused for holding too many: re-sent with the next plan
        self._overflows = 0  # capacity refusals since the last plan
        self._auth_event_id: str | None = None
        self._authenticated = False
        self._awaiting_auth: set[str] = set()  # refused with auth-required before we authenticated
        self._auth_retried: set[str] = set()  # refused again after authenticating: not retried twice
        self._reading: dict[str, Reading] = {}  # REQs (and pages) whose stored events are arriving
        self._pager = Pager()
        self.firehose_events = 0
        """Live events (not stored ones of a catch-up) on the firehose subscription; the owner reads and resets it
        to measure the firehose's rate."""

    @property
    def plan(self) -> Plan:
        """The subscriptions the relay has been sent (refused ones included)."""
        return self._plan

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def open_subscriptions(self) -> int:
        """Subscriptions the relay holds open for us: those sent and not refused."""
        return len(self._plan.subscriptions) - len(self._refused | self._overflowed)

    # -- what we send -----------------------------------------------------------------------------------------

    def start(self) -> list[Outgoing]:
        """The REQs of the whole plan, to send once the socket is open."""
        return [self._req(sub_id, sub, self._resumed) for sub_id, sub in self._plan.subscriptions.items()]

    def set_plan(self, plan: Plan, *, switch: bool = False) -> list[Outgoing]:
        """Make `plan` what the relay holds: CLOSEs for vanished subscriptions, REQs for new and changed ones, and
        again for those that may have been refused for holding too many (the new plan is meant to fit).

        CLOSEs go first so that the relay has room for the REQs. These subscriptions start now, not at a
        disconnect, so they get the normal window even on a resume. A changed subscription the relay holds (not
        refused, its catch-up done) re-reads stored events only for the values it did not have (`_delta`).

        `switch`: the plan trades the pubkey lists for the firehose or back. The old subscriptions are closed before
        the new ones start, so the new ones reach back `RESUME_OVERLAP_SECONDS` at least, whatever the window:
        an event the relay took in between is read by the new ones (and one read twice is dropped by admission).
        """
        old = self._plan
        diff = diff_plans(old, plan)
        held = {
            sub_id: old.subscriptions[sub_id]
            for sub_id in diff.send
            if sub_id in old.subscriptions and sub_id not in self._refused | self._overflowed | self._pending
        }
        self._plan = plan
        frames: list[Outgoing] = []
        for sub_id in diff.close:
            self._reading.pop(sub_id, None)
            self._pager.forget(sub_id)
            self._refused.discard(sub_id)
            self._overflowed.discard(sub_id)
            self._pending.discard(sub_id)
            frames.append(Outgoing("CLOSE", orjson.dumps(["CLOSE", sub_id])))
        retry = {sub_id: plan.subscriptions[sub_id] for sub_id in self._overflowed if sub_id not in diff.send}
        self._overflows = 0
        frames.extend(
            self._req(sub_id, sub, resume=False, before=held.get(sub_id), overlap=switch)
            for sub_id, sub in {**diff.send, **retry}.items()
        )
        return frames

    def _req(
        self, sub_id: str, sub: Subscription, resume: bool, before: Subscription | None = None, overlap: bool = False
    ) -> Outgoing:
        """A REQ whose filters each get their own window: one asking for gift wraps the long one. With `before`,
        the version of the subscription the relay holds, stored events are asked for the new values only."""
        regular = giftwrap = None
        filters = []
        for filter_ in sub.filters if before is None else _delta(sub, before):
            if "since" in filter_:
                filters.append(filter_)
            elif asks_giftwrap(filter_):
                giftwrap = self._since(True, resume, overlap) if giftwrap is None else giftwrap
                filters.append({**filter_, "since": giftwrap})
            else:
                regular = self._since(False, resume, overlap) if regular is None else regular
                filters.append({**filter_, "since": regular})
        self._refused.discard(sub_id)
        self._overflowed.discard(sub_id)
        self._pending.add(sub_id)
        stored = tuple(filter_ for filter_ in filters if filter_.get("limit") != 0)
        if stored:
            self._reading[sub_id] = Reading(stored, sub_id)
        else:
            self._reading.pop(sub_id, None)
        self._pager.forget(sub_id)
        return Outgoing("REQ", orjson.dumps(["REQ", sub_id, *filters]))

    def _since(self, giftwrap: bool, resume: bool, overlap: bool = False) -> int:
        """Where a (re)subscription starts reading.

        Gift wraps carry `created_at` up to two days in the past, so they always get their own long window; a
        shorter `since` would hide fresh ones. Regular kinds read the normal window, and after a reconnect reach
        back to just before the disconnect (with `overlap`, before a switch of mode: see `set_plan`), but never
        further than the oldest event we would still push.
        """
        now = int(self._clock())
        if giftwrap:
            return now - max(self._config.giftwrap_since_window_seconds, RESUME_OVERLAP_SECONDS if overlap else 0)
        since = now - self._config.since_window_seconds
        if resume and self._disconnected_at is not None:
            since = min(since, int(self._disconnected_at) - RESUME_OVERLAP_SECONDS)
        if overlap:
            since = min(since, now - RESUME_OVERLAP_SECONDS)
        return max(since, now - self._config.max_event_age_seconds)

    # -- what we receive --------------------------------------------------------------------------------------

    def receive(self, frame: bytes | bytearray | memoryview | str) -> list[Action]:
        """The actions one received frame calls for.

        Each well-formed message is reported once for per-type counts: an EVENT by its `EventReceived` (one action
        per event on the hot path), any other type by a `Received` after the actions it caused.
        """
        size = len(frame)
        if size > self._max_frame:
            return [Garbage(f"frame of {size} bytes")]
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [Garbage("not JSON")]
        # Nearly every frame is a well-formed EVENT: checked by exact type (orjson builds no subclasses), with no
        # handler call and no per-type report besides the event itself. Anything else takes `_message`.
        if type(message) is list and len(message) == 3 and message[0] == "EVENT":
            sub_id, event = message[1], message[2]
            if type(sub_id) is str and type(event) is dict:
                reading = self._reading.get(sub_id) if self._reading else None
                if reading is not None:
                    reading.saw(event.get("created_at"))
                elif sub_id == FIREHOSE_SUBSCRIPTION:
                    self.firehose_events += 1
                return [EventReceived(event, sub_id, size > self._event_frame)]
        try:
            return self._message(message)
        except _BadMessage as exc:
            return [Garbage(str(exc))]

    def _message(self, message: Any) -> list[Action]:
        """Any message but a well-formed EVENT: the actions of its handler, then its `Received`."""
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            raise _BadMessage("not a relay message")
        kind = message[0]
        if kind == "EVENT":
            raise _BadMessage("EVENT must be [EVENT, sub id, object]")
        handler = self._handlers.get(kind)
        if handler is None:
            raise _BadMessage(f"unknown message type {kind[:20]!r}")
        actions = handler(self, message)
        actions.append(_RECEIVED[kind])
        return actions

    def _on_eose(self, message: list[Any]) -> list[Action]:
        if len(message) < 2 or not isinstance(message[1], str):
            raise _BadMessage("EOSE must name a subscription")
        sub_id = message[1]
        actions: list[Action] = []
        if is_page(sub_id):
            if sub_id != self._pager.current:
                return actions
            self._pager.current = None
            actions.append(Outgoing("CLOSE", orjson.dumps(["CLOSE", sub_id])))
        else:
            self._pending.discard(sub_id)
            self._overflowed.discard(sub_id)  # answered after all: the relay holds it
        reading = self._reading.pop(sub_id, None)
        if reading is not None and reading.origin in self._plan.subscriptions:
            self._pager.after(reading)
        actions.extend(self._next_page())
        return actions

    def _next_page(self) -> list[Action]:
        """The REQ of the next page to read, when one is due and none is out."""
        due = self._pager.next()
        if due is None:
            return []
        page_id, reading = due
        self._reading[page_id] = reading
        return [Outgoing("REQ", orjson.dumps(["REQ", page_id, *reading.filters]))]

    def _page_refused(self) -> list[Action]:
        """The relay would not hold the page out (it is full): what was left to read cannot be read now."""
        if self._pager.current is not None:
            self._reading.pop(self._pager.current, None)
        self._pager.refused()
        return []

    def _overflow(self, sub_ids: set[str], sub_id: str | None, reason: str) -> Refused:
        """Mark `sub_ids` as maybe refused for holding too many, and say how many the relay seems to hold."""
        self._overflows += 1
        self._overflowed |= sub_ids
        if sub_id is not None:  # a CLOSED answers its REQ; after a NOTICE the others may still get their EOSE
            self._pending.discard(sub_id)
        held = len(self._plan.subscriptions) - len(self._refused) - self._overflows
        return Refused(sub_id, reason, max(held, 0))

    def _on_closed(self, message: list[Any]) -> list[Action]:
        if len(message) < 2 or not isinstance(message[1], str):
            raise _BadMessage("CLOSED must name a subscription")
        sub_id = message[1]
        reason = message[2] if len(message) > 2 and isinstance(message[2], str) else ""
        if is_page(sub_id):
            return self._page_refused() if sub_id == self._pager.current else []
        sub = self._plan.subscriptions.get(sub_id)
        if sub is not None and reason.startswith(AUTH_REQUIRED):
            if not self._authenticated:
                self._awaiting_auth.add(sub_id)  # re-sent once the relay accepts our AUTH
                return []
            if sub_id not in self._auth_retried:
                # AUTH and this REQ crossed on the wire: one more try now that we are authenticated.
                self._auth_retried.add(sub_id)
                return [self._req(sub_id, sub, self._resumed)]
        if sub is not None:
            if _about_capacity(reason):
                return [self._overflow({sub_id}, sub_id, reason)]
            self._pending.discard(sub_id)
            self._refused.add(sub_id)
        return [Closed(sub_id, reason)]

    def _on_notice(self, message: list[Any]) -> list[Action]:
        """A NOTICE is only text, unless it refuses a REQ: strfry answers one REQ too many with a NOTICE alone, and
        names no subscription, so every REQ still awaiting its EOSE may be the refused one. Those whose EOSE
        arrives after all are held; the others are re-sent with the next (smaller) plan."""
        if len(message) < 2 or not isinstance(message[1], str):
            raise _BadMessage("NOTICE must carry a string")
        text = message[1]
        if self._pending and _about_capacity(text):
            return [self._overflow(set(self._pending), None, text)]
        if self._pager.current is not None and _about_capacity(text):
            return self._page_refused()
        return [Notice(text)]

    def _on_auth(self, message: list[Any]) -> list[Action]:
        if len(message) < 2 or not isinstance(message[1], str) or not message[1]:
            raise _BadMessage("AUTH must carry a challenge string")
        event = build_auth_event(self._keys, self.url, message[1])
        self._auth_event_id = event.id
        return [Outgoing("AUTH", orjson.dumps(["AUTH", event.to_dict()]))]

    def _on_ok(self, message: list[Any]) -> list[Action]:
        if len(message) < 3 or not isinstance(message[1], str) or not isinstance(message[2], bool):
            raise _BadMessage("OK must be [OK, id, bool, ...]")
        if self._auth_event_id is None or message[1] != self._auth_event_id:
            return []  # we publish nothing else; an OK for something else is harmless
        if not message[2]:
            return [AuthRejected(message[3] if len(message) > 3 and isinstance(message[3], str) else "")]
        self._authenticated = True
        waiting, self._awaiting_auth = self._awaiting_auth, set()
        actions: list[Action] = [Authenticated()]
        for sub_id in waiting:
            sub = self._plan.subscriptions.get(sub_id)
            if sub is not None:
                actions.append(self._req(sub_id, sub, self._resumed))
        return actions

    _handlers: ClassVar[dict[str, Callable[[RelaySession, list[Any]], list[Action]]]] = {
        "EOSE": _on_eose,
        "CLOSED": _on_closed,
        "NOTICE": _on_notice,
        "AUTH": _on_auth,
        "OK": _on_ok,
    }


def _about_capacity(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in CAPACITY_WORDS)


def _delta(sub: Subscription, before: Subscription) -> list[dict[str, Any]]:
    """`sub`'s filters for a relay that holds `before`: what it held goes on live only (`limit: 0`, no stored
    events: they were read when it was first sent), and the values new to it go in one filter per kinds and tag
    without a limit, so they alone are caught up. A gift-wrap subscription of a thousand pubkeys would otherwise
    re-read days of gift wraps for all of them whenever one pubkey joins. The values are the same as `sub`'s, cut
    differently, so the REQ stays within the frame the planner sized it for (a few filter envelopes more)."""
    known: dict[tuple[str, tuple[int, ...]], set[str]] = {}
    for filter_ in before.filters:
        tag = _tag_of(filter_)
        if tag is not None:
            known.setdefault((tag, tuple(filter_["kinds"])), set()).update(filter_[tag])
    live: list[dict[str, Any]] = []
    fresh: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for filter_ in sub.filters:
        tag = _tag_of(filter_)
        if tag is None:  # a fixed filter: caught up only if it is new
            live.append({**filter_, "limit": 0} if filter_ in before.filters else filter_)
            continue
        group = (tag, tuple(filter_["kinds"]))
        seen = known.get(group, set())
        kept = [value for value in filter_[tag] if value in seen]
        fresh.setdefault(group, []).extend(value for value in filter_[tag] if value not in seen)
        if kept:
            live.append({**filter_, tag: kept, "limit": 0})
    return live + [{"kinds": list(kinds), tag: values} for (tag, kinds), values in fresh.items() if values]


def _tag_of(filter_: dict[str, Any]) -> str | None:
    """The one tag list of a planned filter (`#p` or `#e`) beside its kinds; None for any other filter."""
    if set(filter_) == {"kinds", "#p"}:
        return "#p"
    if set(filter_) == {"kinds", "#e"}:
        return "#e"
    return None
