"""Nos end to end: kind 6666 registrations built the way the Nos app builds them, sent to pushstr's built-in relay
endpoint and through a real relay, and the silent pushes Nos wakes on, delivered to a fake APNs over HTTP/2 + TLS.

Nos (`PushNotificationRegistrar.swift`) signs a kind 6666 with no tags whose content is its Swift-encoded
`{"apnsToken", "publicKey", "relays": [{"address"}]}`, and writes `["EVENT", …]` to its notification server over a
one-shot WebSocket. Nos's server pushes `{"aps": {"content-available": 1}}` as an APNs background push at
priority 5 for each kind 1 naming the account; woken, the app fetches its mentions from its relays itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nostr_sdk
from prometheus_client import REGISTRY

from pushstr.engine.pipeline import NOTIFICATIONS
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Mode, Platform
from pushstr.relays.urls import normalize_relay_url
from tests.conftest import RelayHandle
from tests.dialects.test_nos import nos_content
from tests.dialects.test_push_settings import send_to_endpoint
from tests.e2e.clients import dm, publish
from tests.fakes import ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
NOS_TOPIC = "com.verse.Nos"
BOB_TOKEN = "5e" * 32
CAROL_TOKEN = "c0" * 32


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def registrations(result: str) -> float:
    return metric("pushstr_nos_registrations_total", result=result)


def nos_registration(user: Any, token: str, relays: list[str], public_key: str | None = None) -> Any:
    """The event `PushNotificationRegistrar.register` publishes: kind 6666, tags `[]`, `created_at` now."""
    content = nos_content(token, public_key or user.public_key().to_hex(), relays)
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(6666), content).finalize(user)


def mention(author: Any, user: Any, text: str) -> Any:
    """A kind 1 naming `user` in a `p` tag (a mention, or a reply to one of their notes)."""
    tags = [nostr_sdk.Tag.parse(["p", user.public_key().to_hex()])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(1), text).tags(tags).finalize(author)


def assert_nos_wake_up(request: Any, token: str) -> None:
    """What Nos's server sends: a background push to the Nos topic, `content-available` and nothing to read."""
    assert request.device_token == token
    assert request.headers["apns-topic"] == NOS_TOPIC
    assert (request.headers["apns-push-type"], request.headers["apns-priority"]) == ("background", "5")
    assert request.payload["aps"] == {"content-available": 1}
    assert set(request.payload) <= {"aps", "count"}


async def test_nos_devices_register_and_are_woken_for_mentions(
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    relay: RelayHandle = await local_relay()
    inbox: RelayHandle = await local_relay()
    inbox_url = normalize_relay_url(inbox.url)
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        apps={"nos": apns_app(fake_apns, apns_key, topic=NOS_TOPIC).model_dump(mode="json", exclude_none=True)},
        dialects={"nos": {"subscribe": True}},
        registration={"allow_private_relays": True},
    )
    bob, carol, alice, mallory = (nostr_sdk.Keys.generate() for _ in range(4))
    bob_hex, carol_hex = bob.public_key().to_hex(), carol.public_key().to_hex()
    server = RunningServer(settings)
    await server.start()
    service = server.service

    def inbox_watched() -> bool:
        return any(status.url == inbox_url and status.subscriptions for status in service.pool.status())

    try:
        await wait_until(lambda: any(status.eose for status in service.pool.status()), 10)
        info = service.dialects[[dialect.name for dialect in service.dialects].index("nos")].describe()
        assert info["kind"] == 6666 and info["kinds"] == [1]

        # Through the built-in endpoint, as Nos sends it to its notification relay: Bob's relays are the inbox.
        registered = registrations("registered")
        event = nos_registration(bob, BOB_TOKEN, [inbox.url])
        assert await send_to_endpoint(server, event) == ["OK", event.id().to_hex(), True, ""]
        await wait_until(lambda: bool(service.registry.devices_for(bob_hex)), 10)
        (phone,) = service.registry.devices_for(bob_hex)
        assert (phone.dialect, phone.platform, phone.app, phone.mode) == ("nos", Platform.IOS, "nos", Mode.SILENT)
        assert (phone.device_token, phone.relays, phone.kinds) == (BOB_TOKEN, (inbox_url,), frozenset({1}))
        assert registrations("registered") == registered + 1
        await wait_until(inbox_watched, 10)

        # Mallory names Bob as the publicKey of her own registration: refused, on the endpoint and on a relay.
        not_signer = registrations("not_signer")
        forged = nos_registration(mallory, CAROL_TOKEN, [], public_key=bob_hex)
        assert (await send_to_endpoint(server, forged))[2] is True  # admitted as an event; refused as a registration
        assert registrations("not_signer") == not_signer + 1
        await publish(relay.url, nos_registration(mallory, "ab" * 32, [], public_key=carol_hex))
        await wait_until(lambda: registrations("not_signer") == not_signer + 2, 10)

        # Through a relay (`subscribe`): Carol's registration, read back by pushstr's subscription.
        await publish(relay.url, nos_registration(carol, CAROL_TOKEN, [relay.url]))
        await wait_until(lambda: bool(service.registry.devices_for(carol_hex)), 10)
        assert [reg.device_token for reg in service.registry.devices_for(carol_hex)] == [CAROL_TOKEN]
        assert not service.registry.devices_for(mallory.public_key().to_hex())

        # A mention of Bob on his relay, seen there and on pushstr's relay too: one wake-up.
        note = mention(alice, bob, "gm @bob")
        await publish(inbox.url, note)
        await publish(relay.url, note)
        await wait_until(lambda: len(fake_apns.requests) == 1, 15)
        assert_nos_wake_up(fake_apns.requests[0], BOB_TOKEN)
        assert "gm" not in str(fake_apns.requests[0].payload)

        # A DM is not what Nos shows: not pushed (the endpoint answers once the pipeline ran).
        queued = NOTIFICATIONS.value("queued")
        message = dm(alice, bob, "psst")
        assert await send_to_endpoint(server, message) == ["OK", message.id().to_hex(), True, ""]
        assert NOTIFICATIONS.value("queued") == queued

        # Carol's mention on pushstr's relay: her phone, once; Bob's got nothing more.
        await publish(relay.url, mention(alice, carol, "hi carol"))
        await wait_until(lambda: len(fake_apns.requests) == 2, 15)
        assert_nos_wake_up(fake_apns.requests[1], CAROL_TOKEN)
    finally:
        await server.stop()

    # After a restart Bob is still registered and his relay watched again.
    server = RunningServer(settings)
    await server.start()
    service = server.service
    try:
        assert [reg.relays for reg in service.registry.devices_for(bob_hex)] == [(inbox_url,)]
        await wait_until(inbox_watched, 10)
        await publish(inbox.url, mention(alice, bob, "still there?"))
        await wait_until(lambda: len(fake_apns.requests) == 3, 15)
        assert_nos_wake_up(fake_apns.requests[2], BOB_TOKEN)
    finally:
        await server.stop()


async def test_relays_on_private_addresses_are_not_watched(
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    relay: RelayHandle = await local_relay()
    inbox: RelayHandle = await local_relay()
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        apps={"nos": apns_app(fake_apns, apns_key, topic=NOS_TOPIC).model_dump(mode="json", exclude_none=True)},
    )
    server = RunningServer(settings)
    await server.start()
    service = server.service
    bob, alice = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    bob_hex = bob.public_key().to_hex()
    try:
        # The inbox by a name that resolves to loopback, and a LAN address: neither passes the URL guard.
        refused = metric("pushstr_registration_relays_refused_total", reason="refused")
        listed = [f"ws://localhost:{inbox.port}", "ws://10.1.2.3:7777", relay.url]
        assert (await send_to_endpoint(server, nos_registration(bob, BOB_TOKEN, listed)))[2] is True
        await wait_until(lambda: bool(service.registry.devices_for(bob_hex)), 10)
        (phone,) = service.registry.devices_for(bob_hex)
        assert phone.relays == (normalize_relay_url(relay.url),)  # the operator's relay, watched anyway
        assert metric("pushstr_registration_relays_refused_total", reason="refused") == refused + 2
        watched = {status.url for status in service.pool.status()}
        assert watched == {relay.url}  # the configured relay, in its configured spelling, and no other

        # Kind 6666 is not asked of relays by default: a registration published there registers nobody.
        other = nostr_sdk.Keys.generate()
        on_relay = nos_registration(other, "ee" * 32, [])
        await publish(relay.url, on_relay)
        await publish(relay.url, mention(alice, bob, "hello"))
        await wait_until(lambda: len(fake_apns.requests) == 1, 15)
        assert_nos_wake_up(fake_apns.requests[0], BOB_TOKEN)
        assert not service.registry.devices_for(other.public_key().to_hex())
    finally:
        await server.stop()
