"""Matching: which registered devices an admitted event is for.

Recipients are the registered pubkeys named in the event's `p` tags, never its author (a user does not get
woken by their own note), and the devices following a group named in its `e` tags; each device then filters
by the kinds it registered for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pushstr.nostr.event import Event
from pushstr.registry.model import Registration

MAX_P_TAGS_CONSIDERED = 1000
MAX_E_TAGS_CONSIDERED = 100

DevicesFor = Callable[[str], Sequence[Registration]]


@dataclass(frozen=True, slots=True)
class Match:
    recipient: str
    device: Registration


def match_event(event: Event, devices_for: DevicesFor, devices_for_group: DevicesFor | None = None) -> list[Match]:
    """Every (recipient, device) pair the event should reach; each device at most once per event.

    With `devices_for_group`, the event's `e` tags are looked up as groups too: a device following a group the
    event names is reached under its own pubkey, unless that pubkey wrote the event.
    """
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
    if devices_for_group is not None:
        _match_groups(event, devices_for_group, matches)
    return matches


def _match_groups(event: Event, devices_for_group: DevicesFor, matches: list[Match]) -> None:
    reached: set[tuple[str, str]] | None = None  # built on the first group that has devices: most events have none
    seen_groups: set[str] = set()
    for tag in event.tags:
        if len(tag) < 2 or tag[0] != "e" or tag[1] in seen_groups:
            continue
        seen_groups.add(tag[1])
        if len(seen_groups) > MAX_E_TAGS_CONSIDERED:
            break
        devices = devices_for_group(tag[1])
        if not devices:
            continue
        if reached is None:
            reached = {match.device.key for match in matches}
        for device in devices:
            if device.pubkey != event.pubkey and event.kind in device.kinds and device.key not in reached:
                reached.add(device.key)
                matches.append(Match(device.pubkey, device))
