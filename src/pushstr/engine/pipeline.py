"""The event path in one place: admission → kind handlers → match → notification → delivery.

The relay pool calls `Pipeline.on_relay_event` (match before verify) and the built-in endpoint `Pipeline.ingest`
(verify everything, since it answers each event); dialects that speak over Nostr events (kind 22456 push
settings, …) register a handler for their kind and see only admitted, verified events. A kind that is also what
users receive (kind 1059 gift wraps: NIP-17 DMs, and Marmot push triggers to the server) is claimed only for one
recipient, with an `Addressed` handler: those events go to the dialect, every other event of the kind is matched.
A dialect that keeps users' own filters (Verse) adds an `EventMatcher`, asked about every event beside its tags.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from pushstr.config import AppConfig
from pushstr.delivery.render import MODES_WITH_EVENT, payload_mode
from pushstr.engine.admission import Admission, Rejected
from pushstr.engine.handled import HandledShards
from pushstr.engine.match import DevicesFor, Match, match_event
from pushstr.engine.policy import PolicyStage
from pushstr.logutil import RateLimitedLog
from pushstr.metrics import LoopCounter
from pushstr.nostr.event import Event
from pushstr.nostr.kinds import Kind
from pushstr.nostr.zaps import zap_sats, zap_sender
from pushstr.registry.model import Mode, Registration
from pushstr.transports.base import Notification

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

MATCHED = LoopCounter("pushstr_events_matched", "Admitted events that reached at least one device")
NOTIFICATIONS = LoopCounter(
    "pushstr_notifications",
    "Notifications handed to delivery",
    ["result"],
    initial=[("queued",), ("dropped",), ("held_back",)],
)
HANDLER_ERRORS = Counter("pushstr_kind_handler_errors_total", "Kind handlers that raised", ["kind"])
MATCHER_ERRORS = Counter("pushstr_event_matcher_errors_total", "Dialect event matchers that raised")
ALERT_MODES = frozenset({Mode.ALERT, Mode.ALERT_EVENT, Mode.NOTEPUSH})
# Plain ints for the per-event comparisons: reading a `Kind` member costs several times an int comparison.
_DM, _GIFT_WRAP, _NOTE, _ZAP_RECEIPT = (
    int(kind) for kind in (Kind.ENCRYPTED_DM, Kind.GIFT_WRAP, Kind.TEXT_NOTE, Kind.ZAP_RECEIPT)
)


class Submitter(Protocol):
    def submit(self, notification: Notification, device: Registration) -> bool: ...


class HandledLog(Protocol):
    def record(self, event_id: str, shards: Sequence[int] = ()) -> None:
        """Mark an event handled, so that a restart's relay catch-up does not push it again (and, with several
        instances, for which shards: the next owner of one skips it)."""


KindHandler = Callable[[Event], None]

EventMatcher = Callable[[Event], Sequence[Match]]
"""The devices an event reaches through a dialect's own subscriptions (Verse's stored filters), beside those its
tags reach: called for every event a relay sends, before it is verified, so it must be cheap and change nothing."""


@dataclass(frozen=True, slots=True)
class Addressed:
    """A kind handler that claims only the events `p`-tagging `recipient` (the server's own key).

    Returned from `Dialect.kind_handlers` like any handler; `Pipeline.add_kind_handler` files it by recipient, so
    the kind's other events are still matched to devices. `max_event_bytes` lets the claimed events be larger
    than the configured event limit when the protocol needs it (a full Marmot trigger), bounded by the caller.
    """

    recipient: str
    handler: KindHandler
    max_event_bytes: int | None = None

    def __call__(self, event: Event) -> None:
        """Being callable makes it a `KindHandler`, so `Dialect.kind_handlers` returns it like any other."""
        self.handler(event)


def _addressed_handler(event: Event, by_recipient: dict[str, KindHandler]) -> KindHandler | None:
    """The handler of the first `p` tag of `event` that a handler claims, if any."""
    for tag in event.tags:
        if len(tag) >= 2 and tag[0] == "p":
            handler = by_recipient.get(tag[1])
            if handler is not None:
                return handler
    return None


Policy = Callable[[Event, Registration], bool]
"""Whether a matched device may be woken for an event now (presence, sender narrowing, …)."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one incoming event: `accepted` is the NIP-01 OK flag, `message` its text."""

    accepted: bool
    message: str
    event_id: str | None = None
    notified: int = 0


def _conversation(event: Event) -> str | None:
    """A key under which newer pushes replace older ones: the sender for DMs, the thread root for mentions."""
    if event.kind == _DM:
        return event.pubkey
    for tag in event.tags:
        if len(tag) >= 4 and tag[0] == "e" and tag[3] == "root":
            return tag[1]
    return event.first_tag_value("e")


def _sender(event: Event) -> str | None:
    """Who the notification is from, for its title: nobody for a gift wrap (its author is a one-time key), the
    zapper for a zap receipt (signed by the recipient's LNURL server), else the author."""
    if event.kind == _GIFT_WRAP:
        return None
    if event.kind == _ZAP_RECEIPT:
        return zap_sender(event.tags)
    return event.pubkey


def _zap_extra(event: Event) -> dict[str, str]:
    """`{"sats": "N"}` for a zap receipt whose amount can be read (so alerts say "zapped you N sats" and batching
    sums them); nothing otherwise. Notifications do not share the dict: batching builds new ones."""
    if event.kind != _ZAP_RECEIPT:
        return {}
    sats = zap_sats(event.tags)
    return {"sats": str(sats)} if sats is not None else {}


class Pipeline:
    def __init__(
        self,
        admission: Admission,
        devices_for: DevicesFor,
        delivery: Submitter,
        apps: Mapping[str, AppConfig],
        handled: HandledLog,
        *,
        devices_for_group: DevicesFor | None = None,
        policy: Policy | None = None,
        alert_sender: Callable[[str], None] | None = None,
        preferences: PolicyStage | None = None,
        shards: HandledShards | None = None,
    ) -> None:
        """`devices_for_group` adds matching by `e` tags (groups); `policy` is asked before each submission;
        `alert_sender` is told the sender of every alert-mode notification (so its profile name can be fetched);
        `preferences` applies each device's preferences to the matches, and holds pushes in quiet hours.

        An event that matched is recorded as handled even when the policy held back every device: a device that
        was online when a message came must not be woken for it later, after a restart's catch-up.

        `shards` is given when instances split the pubkeys (`pushstr.cluster`): an event is then notified only to
        the devices of shards it was not handled for, and the events of handlers added with `sharded=True`
        (registrations) reach them only when their author's shard is this instance's, so one instance applies
        each registration. Events sent to the built-in endpoint are applied where they arrive.
        """
        self._admission = admission
        self._devices_for = devices_for
        self._devices_for_group = devices_for_group
        self._policy = policy
        self._alert_sender = alert_sender
        self._preferences = preferences
        self._delivery = delivery
        self._apps = apps
        self._handled = handled
        self._handlers: dict[int, KindHandler] = {}
        self._addressed: dict[int, dict[str, KindHandler]] = {}
        self._shards = shards
        self._sharded: set[int] = set()
        self._matchers: tuple[EventMatcher, ...] = ()

    def add_kind_handler(self, kind: int, handler: KindHandler, *, sharded: bool = False) -> None:
        """Route admitted events of `kind` to a dialect instead of matching them; an `Addressed` handler gets only
        those addressed to its recipient (and admission lets them be as large as it says). A `sharded` handler
        gets relay events only from authors in this instance's shards (see `__init__`)."""
        if sharded:
            self._sharded.add(int(kind))
        if isinstance(handler, Addressed):
            self._addressed.setdefault(int(kind), {})[handler.recipient] = handler.handler
            if handler.max_event_bytes is not None:
                self._admission.allow_larger(int(kind), handler.recipient, handler.max_event_bytes)
            return
        self._handlers[int(kind)] = handler

    def add_matcher(self, matcher: EventMatcher) -> None:
        """Match every event against a dialect's own subscriptions too (see `EventMatcher`)."""
        self._matchers = (*self._matchers, matcher)

    def _with_matchers(self, event: Event, matches: list[Match]) -> list[Match]:
        """`matches` and what the dialects' matchers find, each device once; a matcher that raises is counted
        and logged, and the event still reaches the others."""
        reached = {found.device.key for found in matches}
        for matcher in self._matchers:
            try:
                extra = matcher(event)
            except Exception:
                MATCHER_ERRORS.inc()
                _rate_log.warning("matcher", "an event matcher failed", exc_info=True)
                continue
            for found in extra:
                if found.device.key not in reached:
                    reached.add(found.device.key)
                    matches.append(found)
        return matches

    def _handler_for(self, event: Event) -> KindHandler | None:
        """The handler that consumes `event`, if any: its kind's, else the one claiming its recipient."""
        handler = self._handlers.get(event.kind)
        if handler is None:
            by_recipient = self._addressed.get(event.kind)
            if by_recipient is not None:
                return _addressed_handler(event, by_recipient)
        return handler

    def on_relay_event(self, obj: dict[str, Any], relay_url: str, *, size_checked: bool = True) -> None:
        """Sink for the relay pool: match before verify; results are counted by admission, nothing to answer.

        Most of what a relay sends reaches nobody, so the id hash and the signature check, the costly part of
        admission, are paid only for an event that would do something: one of a kind with a handler (kind 0
        profiles, kind 22456 settings, …: they change state, so they are always verified) or one that matches at
        least one device. The rest is dropped unverified and counted as `unmatched`.

        Why this is safe: the match of the screened, unverified event only decides whether to verify. Nothing
        leaves the pipeline, and no id enters `SeenIds` or the handled log, before `verify` passed. A forged event
        that names a registered user is verified and refused as before. A forged event that names nobody costs a
        shape check and a few dict lookups and is not remembered, so it cannot shadow the real event with the same
        id arriving later. A real event that reaches nobody is not remembered either (an unverified "reached
        nobody" memory would let a forged copy that names a stranger suppress the real one): a repeat is
        screened and matched again, which is cheap. The matches found before verifying are the ones notified:
        verifying changes nothing they depend on.

        Relay connections drop frames larger than `max_event_bytes` plus the envelope before they get here; one
        that lets a larger frame through (for the events an `Addressed` handler may take larger) passes
        `size_checked=False`, and admission then bounds the event by its own limit.
        """
        admission = self._admission
        try:
            event = admission.screen(obj, size_checked=size_checked)
        except Rejected:
            return
        handler = self._handlers.get(event.kind)
        if handler is None and self._addressed:
            by_recipient = self._addressed.get(event.kind)
            if by_recipient is not None:
                handler = _addressed_handler(event, by_recipient)
        if handler is not None:
            if self._shards is not None and event.kind in self._sharded and not self._shards.owns(event.pubkey):
                return  # another instance applies it
            try:
                admission.verify(event)
            except Rejected:
                return
            self._handle(event, handler)
            return
        matches = match_event(event, self._devices_for, self._devices_for_group, relay_url)
        if self._matchers:
            matches = self._with_matchers(event, matches)
        if self._preferences is not None:
            matches = self._preferences.select(event, matches)
        if not matches:
            admission.drop_unmatched()
            return
        try:
            admission.verify(event)
        except Rejected:
            return
        self._notify(event, matches, relay_url)

    def ingest(self, obj: Any, relay_url: str | None = None) -> IngestResult:
        """Admit and route an event sent to the built-in endpoint; the result is its NIP-01 OK.

        Unlike the relay path, every event is verified before matching, whether it reaches anyone or not: the
        client is told whether its event was accepted, so `OK true` must mean a checked id and signature, and a
        forged event must be answered `invalid:` rather than dropped in silence. Events are sent here on purpose,
        one client at a time, so few of those checks are wasted.
        """
        try:
            event = self._admission.admit(obj)
        except Rejected as exc:
            accepted = exc.code == "duplicate"
            return IngestResult(accepted, exc.message, obj.get("id") if isinstance(obj, dict) else None)
        handler = self._handler_for(event)
        if handler is not None:
            self._handle(event, handler)
            return IngestResult(True, "", event.id)
        matches = match_event(event, self._devices_for, self._devices_for_group, relay_url)
        if self._matchers:
            matches = self._with_matchers(event, matches)
        if self._preferences is not None:
            matches = self._preferences.select(event, matches)
        return IngestResult(True, "", event.id, self._notify(event, matches, relay_url) if matches else 0)

    def _handle(self, event: Event, handler: KindHandler) -> None:
        """Hand a verified event to its kind's handler; a failing handler is counted and logged, never raised."""
        try:
            handler(event)
        except Exception:
            HANDLER_ERRORS.labels(str(event.kind)).inc()
            _rate_log.warning(f"handler-{event.kind}", "kind %d handler failed", event.kind, exc_info=True)

    def _notify(self, event: Event, matches: list[Match], relay_url: str | None) -> int:
        """Notify the devices a verified event matched (at least one); how many notifications were queued."""
        if self._shards is not None:
            matches = self._shards.fresh(event.id, matches)
            if not matches:
                return 0  # handled for these shards already, here or by their previous owner
            self._handled.record(event.id, self._shards.record(event.id, matches))
        else:
            self._handled.record(event.id)
        MATCHED.inc()
        preferences = self._preferences
        if preferences is not None:
            preferences.record(event, matches)
        sent = 0
        sender = _sender(event)
        conversation = _conversation(event)
        extra = _zap_extra(event)
        event_json: bytes | None = None
        for found in matches:
            device = found.device
            if self._policy is not None and not self._policy(event, device):
                NOTIFICATIONS.inc("held_back")
                continue
            app = self._apps.get(device.app)  # None for an app removed from the configuration: delivery drops it
            mode = payload_mode(device, app)
            if event_json is None and mode in MODES_WITH_EVENT:
                event_json = event.to_json()
            length = app.preview_length if app is not None else 0
            preview = event.content[:length] if event.kind == _NOTE and length else None
            notification = Notification(
                event_id=event.id,
                kind=event.kind,
                recipient=found.recipient,
                sender=sender,
                created_at=event.created_at,
                app=device.app,
                mode=mode,
                event_json=event_json if mode in MODES_WITH_EVENT else None,
                relay=relay_url,
                conversation=conversation,
                preview=preview,
                extra=extra,
            )
            if preferences is not None and preferences.defer(notification, device):
                NOTIFICATIONS.inc("held_back")
                continue
            if sender is not None and self._alert_sender is not None and mode in ALERT_MODES:
                self._alert_sender(sender)
            if self._delivery.submit(notification, device):
                NOTIFICATIONS.inc("queued")
                sent += 1
            else:
                NOTIFICATIONS.inc("dropped")
        return sent
