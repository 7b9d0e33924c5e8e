"""Matching: which registered devices an admitted event is for.

Recipients are the registered pubkeys named in the event's `p` tags, never its author (a user does not get
woken by their own note); each device then filters by the kinds it registered for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pushstr.nostr.event import Event
from pushstr.registry.model import Registration

MAX_P_TAGS_CONSIDERED = 1000

DevicesFor = Callable[[str], Sequence[Registration]]


@dataclass(frozen=True, slots=True)
class Match:
    recipient: str
    device: Registration


def match_event(event: Event, devices_for: DevicesFor) -> list[Match]:
    """Every (recipient, device) pair the event should reach; each device at most once per event."""
    matches: list[Match] = []
    seen_recipients: set[str] = {event.pubkey}
    considered = 0
    for tag in event.tags:
        if len(tag) < 2 or tag[0] != "p":
            continue
        considered += 1
        if considered > MAX_P_TAGS_CONSIDERED:
            break
        recipient = tag[1]
        if recipient in seen_recipients:
            continue
        seen_recipients.add(recipient)
        for device in devices_for(recipient):
            if event.kind in device.kinds:
                matches.append(Match(recipient, device))
    return matches
