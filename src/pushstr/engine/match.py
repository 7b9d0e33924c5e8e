"""Matching: which registered devices an admitted event is for.

Recipients are the registered pubkeys named in the event's `p` tags, never its author (a user does not get
woken by their own note), the devices following a channel named in its `e` tags, and the devices following a
NIP-29 relay group named in its `h` tag, when the event came from that group's relay (a group id means nothing
on another relay); each device then filters by the kinds it registered for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from pushstr.nostr.event import Event
from pushstr.nostr.nip29 import group_key, relay_host
from pushstr.registry.model import Registration

MAX_P_TAGS_CONSIDERED = 1000
MAX_E_TAGS_CONSIDERED = 100

DevicesFor = Callable[[str], Sequence[Registration]]


class Match(NamedTuple):
    """One device an event reaches, and the pubkey it reaches it under (a tuple: one is built per match)."""

    recipient: str
    device: Registration


def match_event(
    event: Event, devices_for: DevicesFor, devices_for_group: DevicesFor | None = None, relay: str | None = None
) -> list[Match]:
    """Every (recipient, device) pair the event should reach; each device at most once per event.

    With `devices_for_group`, the event's `e` tags are looked up as groups too, and so are its `h` tags as
    groups of `relay` (the relay the event was read from): a device following a group the event names is reached
    under its own pubkey, unless that pubkey wrote the event. One pass over the tags collects all of them, since
    this runs for every admitted event.
    """
    matches: list[Match] = []
    kind = event.kind
    seen_recipients: set[str] = {event.pubkey}
    groups: list[str] | None = None
    considered = 0
    for tag in event.tags:
        if len(tag) < 2:
            continue
        name = tag[0]
        if name == "p":
            considered += 1
            recipient = tag[1]
            if considered > MAX_P_TAGS_CONSIDERED or recipient in seen_recipients:
                continue
            seen_recipients.add(recipient)
            for device in devices_for(recipient):
                if kind in device.kinds:
                    matches.append(Match(recipient, device))
        elif name == "e" and devices_for_group is not None:
            if groups is None:
                groups = []
            groups.append(tag[1])
        elif name == "h" and relay is not None and devices_for_group is not None:
            host = relay_host(relay)
            if host is not None:
                if groups is None:
                    groups = []
                groups.append(group_key(host, tag[1]))
    if groups is not None and devices_for_group is not None:
        _match_groups(event, groups, devices_for_group, matches)
    return matches


def _match_groups(event: Event, groups: list[str], devices_for_group: DevicesFor, matches: list[Match]) -> None:
    reached: set[tuple[str, str]] | None = None  # built on the first group that has devices: most have none
    seen_groups: set[str] = set()
    for group in groups:
        if group in seen_groups:
            continue
        seen_groups.add(group)
        if len(seen_groups) > MAX_E_TAGS_CONSIDERED:
            break
        devices = devices_for_group(group)
        if not devices:
            continue
        if reached is None:
            reached = {match.device.key for match in matches}
        for device in devices:
            if device.pubkey != event.pubkey and event.kind in device.kinds and device.key not in reached:
                reached.add(device.key)
                matches.append(Match(device.pubkey, device))
