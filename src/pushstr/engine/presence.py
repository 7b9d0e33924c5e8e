"""The policy stage: which matched devices may be woken now.

Two rules live here, both driven by what a device told the server about itself:

* Presence. A client that keeps its own relay connection while in the foreground (0xchat) beats
  `{"online": 1}` every minute; while those beats keep coming it sees its messages itself and must not be
  pushed. With no beat for `timeout` seconds, or after `{"online": 0}`, pushes resume. Beats are ordered by
  their event `created_at`: an older beat or offline notice never overrides a newer one, so relays delivering
  them out of order cannot flip the state back. A beat older than `timeout` is stale and ignored.
* Sender narrowing. A registration whose `authors` lists pubkeys (0xchat sends the user's contacts) only wants
  pushes from those senders, where the sender is knowable: the author for ordinary kinds, the zap request's
  author for a zap receipt (the receipt is signed by the recipient's LNURL server). A gift wrap's author is a
  one-time key, so gift wraps are never narrowed; nor are group and channel messages (NIP-29 kinds 9-12,
  NIP-28 kind 42), which reach a device because it follows the group, whoever writes there.

Only devices that announced presence are ever held back; everything else passes untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from pushstr.nostr.event import Event
from pushstr.nostr.kinds import Kind
from pushstr.nostr.nip29 import GROUP_KINDS
from pushstr.nostr.zaps import zap_sender
from pushstr.registry.model import Registration

_ZAP_RECEIPT = int(Kind.ZAP_RECEIPT)
#: Kinds whose author says nothing about whether the device wants them (see the module docstring).
_NOT_NARROWED = frozenset({int(Kind.GIFT_WRAP), int(Kind.CHANNEL_MESSAGE), *(int(kind) for kind in GROUP_KINDS)})
DEFAULT_TIMEOUT_SECONDS = 150.0
DEFAULT_MAX_DEVICES = 1_000_000

HELD_BACK = Counter("pushstr_policy_held_back_total", "Matched devices not woken", ["reason"])
ONLINE = Gauge("pushstr_presence_online_devices", "Devices currently reported online")
for _reason in ("online", "author"):
    HELD_BACK.labels(_reason)


@dataclass(slots=True)
class _State:
    created_at: int  # of the event that set the state
    online_until: float  # server clock; 0 when offline


class Presence:
    """Online state per device (pubkey, device token), with a heartbeat timeout; see the module docstring.

    Memory is bounded: a device's entry lasts at most `timeout` seconds past its last update (after that it
    would be offline anyway, and any beat older than it is stale), `expire()` drops those, and past
    `max_devices` entries new devices are not tracked (they stay pushable).
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
        max_devices: int = DEFAULT_MAX_DEVICES,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._timeout = timeout
        self._clock = clock
        self._max_devices = max_devices
        self._states: dict[tuple[str, str], _State] = {}

    @property
    def timeout(self) -> float:
        return self._timeout

    def report(self, pubkey: str, device_token: str, online: bool, created_at: int) -> bool:
        """Apply a heartbeat (`online`) or an offline notice made at `created_at`; whether it changed anything.

        Refused (False): a report older than the newest one applied for the device, or older than `timeout`.
        """
        now = self._clock()
        if created_at < now - self._timeout:
            return False
        key = (pubkey, device_token)
        state = self._states.get(key)
        if state is not None and created_at < state.created_at:
            return False
        if state is None and len(self._states) >= self._max_devices:
            self.expire()
            if len(self._states) >= self._max_devices:
                return False
        until = now + self._timeout if online else 0.0
        if state is None:
            self._states[key] = _State(created_at, until)
        else:
            state.created_at, state.online_until = created_at, until
        return True

    def forget(self, pubkey: str, device_token: str) -> None:
        """Drop a device's state (it logged out or was unregistered)."""
        self._states.pop((pubkey, device_token), None)

    def is_online(self, pubkey: str, device_token: str) -> bool:
        state = self._states.get((pubkey, device_token))
        return state is not None and state.online_until > self._clock()

    def expire(self) -> int:
        """Forget entries that can no longer matter; how many were dropped. Updates the online gauge."""
        now = self._clock()
        horizon = now - self._timeout
        stale = [key for key, state in self._states.items() if state.online_until <= now and state.created_at < horizon]
        for key in stale:
            del self._states[key]
        ONLINE.set(sum(state.online_until > now for state in self._states.values()))
        return len(stale)

    def allows(self, event: Event, device: Registration) -> bool:
        """The pipeline's policy: False when the device is online or the sender is outside its authors."""
        if self._states and self.is_online(device.pubkey, device.device_token):
            HELD_BACK.labels("online").inc()
            return False
        authors = device.authors
        if authors and event.kind not in _NOT_NARROWED:
            sender = zap_sender(event.tags) if event.kind == _ZAP_RECEIPT else event.pubkey
            if sender is not None and sender not in authors:
                HELD_BACK.labels("author").inc()
                return False
        return True
