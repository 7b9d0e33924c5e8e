"""Admission: the single gate every event passes, whichever relay or endpoint it came from.

Order matters for speed. `screen` does the cheap part (dedupe by the stated id, strict shape, size, age) and
`verify` the costly one (the id hash and the BIP-340 signature), so an event seen on five relays is verified once;
between the two the relay path asks whether the event would do anything at all (`Pipeline.on_relay_event`), and
an event that reaches nobody is dropped unverified (`drop_unmatched`). Only `verify` records an id in `SeenIds`,
so an id there always belongs to an event whose id and signature were checked.

Every event is bounded by `max_event_bytes`, except the events of one kind addressed to one recipient that a
handler claims and needs larger (`allow_larger`: Marmot push triggers gift-wrapped to the server), which get
their own, still finite, limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pushstr.engine.dedupe import SeenIds
from pushstr.metrics import LoopCounter
from pushstr.nostr.errors import InvalidEvent, NostrError
from pushstr.nostr.event import Event

ADMITTED = LoopCounter("pushstr_events_admitted", "Events that passed admission")
REJECTED = LoopCounter(
    "pushstr_events_rejected",
    "Events refused by admission; `unmatched` ones reached nobody and were dropped without being verified",
    ["reason"],
    initial=[
        (reason,)
        for reason in (
            "malformed",
            "bad_id",
            "bad_signature",
            "duplicate",
            "too_old",
            "future",
            "too_large",
            "unmatched",
        )
    ],
)


class Rejected(NostrError):
    """An event admission refused; `code` is the metric label, `message` the NIP-01 OK text."""

    def __init__(self, prefix: str, code: str, reason: str) -> None:
        super().__init__(reason)
        self.prefix = prefix
        self.code = code


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_event_bytes: int
    max_age_seconds: int
    max_future_seconds: int = 15 * 60
    ageless_kinds: frozenset[int] = frozenset({0})
    """Kinds whose age says nothing about relevance: a current profile (kind 0) may be years old."""


def _approx_size(event: Event) -> int:
    """Size of the event's variable parts; relays hand over decoded objects, so the raw length is not known."""
    size = len(event.content) + 300
    for tag in event.tags:
        size += 3 * len(tag) + sum(map(len, tag))
    return size


class Admission:
    """Validates, dedupes and verifies events; keeps the bounded in-memory set of ids seen."""

    def __init__(self, limits: AdmissionLimits, seen: SeenIds) -> None:
        self._limits = limits
        self._seen = seen
        self._larger: dict[int, dict[str, int]] = {}

    def allow_larger(self, kind: int, recipient: str, max_bytes: int) -> None:
        """Let events of `kind` that `p`-tag `recipient` be up to `max_bytes` (the others keep the limit)."""
        self._larger.setdefault(kind, {})[recipient] = max_bytes

    def _limit_of(self, event: Event) -> int:
        """The size limit of `event`: the larger one of a recipient it names, else `max_event_bytes`."""
        limit = self._limits.max_event_bytes
        by_recipient = self._larger.get(event.kind)
        if by_recipient:
            for recipient in event.p_tags:
                limit = max(limit, by_recipient.get(recipient, 0))
        return limit

    @property
    def seen(self) -> SeenIds:
        return self._seen

    def _reject(self, prefix: str, code: str, reason: str) -> Rejected:
        REJECTED.inc(code)
        return Rejected(prefix, code, reason)

    def admit(self, obj: Any, now: float | None = None, *, size_checked: bool = False) -> Event:
        """The verified event, or `Rejected` (with a NIP-01 prefix) for anything that must not go further:
        `screen` then `verify`, for callers that answer every event (the built-in endpoint)."""
        event = self.screen(obj, now, size_checked=size_checked)
        self.verify(event)
        return event

    def screen(self, obj: Any, now: float | None = None, *, size_checked: bool = False) -> Event:
        """The parsed but unverified event, or `Rejected`: dedupe, shape, size and age, no hashing.

        A frame whose id was seen is a duplicate before it is parsed: that is the common case with several
        relays, and a forged copy of a known id is harmless (the id was already handled, and only verified
        events are in `SeenIds`). `size_checked` says the caller already bounded the raw frame by
        `max_event_bytes` plus its envelope, as relay connections do, so the approximate size need not be
        summed again. Nothing is recorded: the event's id and signature are still unchecked.
        """
        if type(obj) is dict:
            stated = obj.get("id")
            if type(stated) is str and stated in self._seen:
                raise self._reject("duplicate", "duplicate", "already have this event")
        try:
            event = Event.from_dict(obj)
        except InvalidEvent as exc:
            raise self._reject("invalid", "malformed", exc.reason) from None
        if not size_checked:
            size = _approx_size(event)
            if size > self._limits.max_event_bytes and size > (limit := self._limit_of(event)):
                raise self._reject("invalid", "too_large", f"event larger than {limit} bytes")
        current = time.time() if now is None else now
        if event.created_at < current - self._limits.max_age_seconds and event.kind not in self._limits.ageless_kinds:
            raise self._reject("invalid", "too_old", "event is older than this server accepts")
        if event.created_at > current + self._limits.max_future_seconds:
            raise self._reject("invalid", "future", "created_at is too far in the future")
        return event

    def verify(self, event: Event) -> None:
        """Check a screened event's id and signature, or raise `Rejected`; then remember its id as seen.

        Recording happens here and only here, after both checks, so a forged copy (right id, wrong fields or
        signature) can never make the real event look like a duplicate.
        """
        try:
            digest = event.id_digest()
        except InvalidEvent:
            digest = b""
        if digest.hex() != event.id:
            raise self._reject("invalid", "bad_id", "event id does not match its serialization")
        if not event.signs(digest):
            raise self._reject("invalid", "bad_signature", "bad signature")
        self._seen.add(event.id)
        ADMITTED.inc()

    def drop_unmatched(self) -> None:
        """Count a screened event dropped unverified because no device and no kind handler wanted it."""
        REJECTED.inc("unmatched")
