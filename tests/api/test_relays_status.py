"""`GET /relays`: every relay connection's state, subscriptions and counters, without what must stay private.

The page is unauthenticated: an operator's relay is shown without the user info and query its URL may carry, a
relay a user named only by a digest label, and no error text that could name the host it failed on.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pushstr.api.app import create_app
from pushstr.app import Service
from pushstr.logutil import ident
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import RelayState
from pushstr.relays.limits import STRFRY_MAX_SUBSCRIPTIONS
from tests.fakes.strict_relay import StrictRelay
from tests.harness import make_settings, wait_until
from tests.relays.support import publish

BASE = "http://pushstr.test"


def _closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def relays() -> AsyncIterator[tuple[StrictRelay, StrictRelay]]:
    operator, named = StrictRelay(), StrictRelay()
    await operator.start()
    await named.start()
    yield operator, named
    await operator.stop()
    await named.stop()


async def test_relays_status_shows_every_connection_and_hides_what_is_private(
    tmp_path: Path, relays: tuple[StrictRelay, StrictRelay]
) -> None:
    operator, named = relays
    server = Keys.generate()
    # Stored before pushstr subscribes, so it arrives with the first REQ's stored events.
    settings_event = sign_event(Keys.generate(), 22456, "not a settings payload", [["p", server.public_hex]])
    await publish(operator.url, settings_event)
    configured = f"ws://op:hunter2@127.0.0.1:{operator.port}/?token=hush"
    user_named = f"ws://127.0.0.1:{named.port}/private-path?key=secret"
    unreachable = f"ws://127.0.0.1:{_closed_port()}/gone"
    service = Service(make_settings(tmp_path, [configured], server.secret_hex))
    await service.start()
    try:
        service.pool.add_relay(user_named)
        service.pool.add_relay(unreachable)

        def settled() -> bool:
            statuses = {status.url: status for status in service.pool.status()}
            return (
                statuses[configured].events == 1
                and statuses[user_named].state is RelayState.CONNECTED
                and statuses[unreachable].last_error is not None
            )

        await wait_until(settled, timeout=10)
        app = create_app(service, manage_service=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            response = await client.get("/relays")
    finally:
        await service.stop()

    assert response.status_code == 200
    for private in ("hunter2", "hush", "private-path", "secret", str(named.port), "gone"):
        assert private not in response.text
    latest = {entry["relay"]: entry for entry in response.json()["relays"]}
    shown = f"ws://127.0.0.1:{operator.port}/"
    # a user's relay is labelled by a digest of its one spelling (the query-carrying URL has none: it is kept as is)
    named_label = f"user-{ident(user_named, 12)}"
    unreachable_label = f"user-{ident(unreachable + '/', 12)}"
    assert set(latest) == {shown, named_label, unreachable_label}
    operator_entry = latest[shown]
    assert operator_entry["configured"] is True and latest[named_label]["configured"] is False
    assert operator_entry["connections"] == 1
    subscriptions = operator_entry["subscriptions"]
    assert 1 <= subscriptions["open"] == subscriptions["planned"] <= subscriptions["allowed"]
    assert subscriptions["allowed"] == STRFRY_MAX_SUBSCRIPTIONS
    assert operator_entry["limits"]["source"] == "default"
    assert operator_entry["reqs_sent"] >= subscriptions["planned"] and operator_entry["refused"] == 0
    assert operator_entry["eose"] >= 1 and operator_entry["last_error"] is None
    gone = latest[unreachable_label]
    assert gone["state"] in {"connecting", "backoff"} and gone["connect_failures"] >= 1
    assert ":" not in gone["last_error"]  # the error's kind only, never its text
