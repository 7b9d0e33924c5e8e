"""The one interface every registration protocol implements, and what the composition root offers them.

A dialect turns one wire format (an HTTP API, an event kind, …) into registry changes. It tells the service what
it needs, and the service wires every dialect the same way: its kind handlers go to the pipeline, its relay
filters into the subscription plan, its router into the HTTP app, and it is started after the registry is loaded
and stopped before the relays close. Adding a dialect is one new module with a `build(context)` function and one
line in `app.DIALECTS`. A dialect whose users keep their own filters also matches events itself (`matcher`) and
says when the filters it asks relays for change (`relay_filters_changed`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from fastapi import APIRouter

from pushstr.config import Settings
from pushstr.dialects.registration_relays import RegistrationRelays
from pushstr.engine.pipeline import EventMatcher, KindHandler, Submitter
from pushstr.engine.presence import Presence
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Registration
from pushstr.registry.preferences import PreferenceBook
from pushstr.registry.service import Registry
from pushstr.registry.storage import FilterStore
from pushstr.transports.base import Notification, SendResult


class Refused(ValueError):
    """An input a dialect does not act on. `result` is its metric label (counted, never user data); the message is
    the reason, which the client is told where the protocol has an answer for it."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result


class Dialect:
    """A registration protocol. Subclasses set `name` and override what they use; the defaults do nothing.

    `name` is what `/info` lists and what a registration's `dialect` field says, so it is stable: stored rows
    carry it.
    """

    name: ClassVar[str]

    def kind_handlers(self) -> Mapping[int, KindHandler]:
        """Event kinds this dialect consumes instead of matching them (its own protocol messages)."""
        return {}

    def relay_filters(self) -> Sequence[Mapping[str, Any]]:
        """Filters every watched relay is asked for on this dialect's behalf, beside the registrations' interest;
        read again whenever the dialect calls `DialectContext.relay_filters_changed`."""
        return ()

    def matcher(self) -> EventMatcher | None:
        """How events reach devices through this dialect's own subscriptions (users' stored filters), beside the
        devices their tags name; None: they do not."""
        return None

    def describe(self) -> Mapping[str, Any]:
        """What a client needs to know to use this dialect here (kinds, formats, routes), listed by `/info`."""
        return {}

    def router(self) -> APIRouter | None:
        """The HTTP routes this dialect serves, if any."""
        return None

    def body_too_large(self, path: str, limit: int) -> tuple[int, dict[str, Any]] | None:
        """The answer (status, JSON body) to a request body over the server's limit on one of this dialect's
        routes, when its wire format documents its own; None: the common 413."""
        return None

    async def start(self) -> None:
        """Called once the registry is loaded (restore state kept beside registrations, start workers)."""

    async def stop(self) -> None:
        """Called before the relays close; must not raise."""

    def adopt(self, reg: Registration) -> None:
        """A registration of this dialect made through another instance arrived (`pushstr.cluster`): take up
        what `start` restores for a loaded one (the relays it names, the groups it follows)."""


class DialectBuilder(Protocol):
    def __call__(self, context: DialectContext) -> Dialect | None: ...


@dataclass(frozen=True, slots=True)
class DialectContext:
    """What the composition root can give a dialect. `build(context)` picks what its dialect uses and passes only
    that to the constructor, so a dialect never sees the service itself."""

    settings: Settings
    keys: Keys
    registry: Registry
    delivery: Submitter
    presence: Presence
    relays: RegistrationRelays
    """Watches the relays registrations name (one URL guard, per-registration and global caps)."""
    set_relay_filters: Callable[[str, Sequence[Mapping[str, Any]]], None]
    """Filters asked of one relay only, beside the shared plan (`RelayPool.set_relay_filters`)."""
    use_token: Callable[[str, int], Awaitable[bool]]
    """Record a NIP-98 authorization id as used until a time; False for a replay (`Store.use_token`)."""
    preferences: PreferenceBook | None = None
    """Each device's notification preferences (`registry.preferences`), for dialects that let users set them."""
    send_now: Callable[[Notification, Registration], Awaitable[SendResult]] | None = None
    """Push once, now, with the provider's answer (`Delivery.send_once`): a user's test push."""
    filters: FilterStore | None = None
    """Users' stored notification filters (`Store`), for dialects that keep them."""
    relay_filters_changed: Callable[[], None] | None = None
    """Tell the service that `Dialect.relay_filters()` changed: the relays are asked anew."""
