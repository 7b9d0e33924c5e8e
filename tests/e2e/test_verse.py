"""Verse end to end: kinds 3079–3082 built the way the reference client builds them (NIP-44 to the server key,
`p`, `app` and `expiration` tags; tests/dialects/verse_client.py), published to a real relay, and the pushes their
filters ask for delivered to a fake FCM over HTTP/2 + TLS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
from prometheus_client import REGISTRY

from pushstr.engine.pipeline import NOTIFICATIONS
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform
from tests.conftest import RelayHandle
from tests.dialects.test_push_settings import send_to_endpoint
from tests.dialects.verse_client import DELETE, DEREGISTER, FCM_TOKEN, REGISTER, UPSERT, verse_event
from tests.e2e.clients import publish
from tests.fakes.fcm import FakeFCM
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
GROUP = "pizza-lovers"


def verse_results(result: str) -> float:
    return REGISTRY.get_sample_value("pushstr_verse_events_total", {"result": result}) or 0.0


def control(user: Any, kind: int, payload: dict[str, Any], at: int, **options: Any) -> Any:
    return verse_event(user, SERVER.public_hex, kind, payload, at=at, **options)


def asked(service: Any, filter_: dict[str, Any]) -> bool:
    """Whether the Verse dialect asks relays for `filter_` (it holds that filter, and nobody else one like it)."""
    (verse,) = [dialect for dialect in service.dialects if dialect.name == "verse"]
    return filter_ in verse.relay_filters()


def tagged(author: Any, kind: int, tag: list[str], text: str) -> Any:
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), text).tags([nostr_sdk.Tag.parse(tag)]).finalize(author)


async def test_verse_filters_push_through_a_real_relay(tmp_path: Path, local_relay: Any) -> None:
    relay: RelayHandle = await local_relay()
    fcm = FakeFCM(tmp_path)
    await fcm.start()
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        apps={
            "verse-fcm": {
                "transport": "fcm",
                "base_url": fcm.url,
                "ca_file": str(fcm.ca_file),
                "service_account_file": str(fcm.write_service_account()),
            }
        },
        dialects={"verse": {"apps": {"default": {"app": "verse-fcm"}}}},
    )
    bob, carol, alice, dave = (nostr_sdk.Keys.generate() for _ in range(4))
    bob_hex, carol_hex = bob.public_key().to_hex(), carol.public_key().to_hex()
    community = f"34550:{alice.public_key().to_hex()}:rust"
    base = int(time.time()) - 100
    mentions = {"kinds": [1, 7, 9735], "#p": [bob_hex]}
    server = RunningServer(settings)
    await server.start()
    service = server.service

    async def not_pushed(event: Any) -> None:
        """The built-in endpoint answers once the pipeline ran: had the event matched, it would be queued."""
        queued = NOTIFICATIONS.value("queued")
        assert await send_to_endpoint(server, event) == ["OK", event.id().to_hex(), True, ""]
        assert NOTIFICATIONS.value("queued") == queued

    try:
        await wait_until(lambda: any(status.eose for status in service.pool.status()), 10)
        async with httpx.AsyncClient() as client:
            info = (await client.get(server.base_url + "/info")).json()["dialect_info"]["verse"]
        assert info["apps"]["default"]["platform"] == "android" and "3079" in info["kinds"]

        # Bob registers his FCM token and asks for his mentions, a NIP-29 group and a NIP-72 community.
        await publish(relay.url, control(bob, REGISTER, {"token": FCM_TOKEN}, base))
        await wait_until(lambda: bool(service.registry.devices_for(bob_hex)), 10)
        (phone,) = service.registry.devices_for(bob_hex)
        assert (phone.dialect, phone.platform, phone.app) == ("verse", Platform.ANDROID, "verse-fcm")
        bobs = (mentions, {"kinds": [9], "#h": [GROUP]}, {"kinds": [1111], "#a": [community]})
        for filter_ in bobs:
            await publish(relay.url, control(bob, UPSERT, {"filter": filter_}, base + 1))
        await wait_until(lambda: all(asked(service, filter_) for filter_ in bobs), 10)

        # A mention, seen on the relay and sent to the endpoint too: pushed once.
        note = tagged(alice, 1, ["p", bob_hex], "gm bob")
        await publish(relay.url, note)
        await wait_until(lambda: len(fcm.requests) == 1, 15)
        await send_to_endpoint(server, note)
        sent = fcm.requests[0].message
        assert sent["token"] == FCM_TOKEN and sent["data"]["event_id"] == note.id().to_hex()
        assert sent["notification"]["title"]
        # The group message and the community post, each to Bob's phone.
        await publish(relay.url, tagged(alice, 9, ["h", GROUP], "pizza tonight"))
        await wait_until(lambda: len(fcm.requests) == 2, 15)
        await publish(relay.url, tagged(alice, 1111, ["a", community], "a post"))
        await wait_until(lambda: len(fcm.requests) == 3, 15)
        assert {request.message["token"] for request in fcm.requests} == {FCM_TOKEN}
        assert len(fcm.requests) == 3
    finally:
        await server.stop()

    # The filters were stored: after a restart they push again.
    server = RunningServer(settings)
    await server.start()
    service = server.service
    try:
        await wait_until(lambda: any(status.eose for status in service.pool.status()), 10)
        await publish(relay.url, tagged(alice, 7, ["p", bob_hex], "+"))
        await wait_until(lambda: len(fcm.requests) == 4, 15)

        # 3082 deletes the mentions filter: a mention pushes nothing; the group filter still does.
        assert asked(service, mentions)  # read back from the store
        await publish(relay.url, control(bob, DELETE, {"filter": mentions}, base + 10, expiration=None))
        await wait_until(lambda: not asked(service, mentions), 10)
        await not_pushed(tagged(alice, 1, ["p", bob_hex], "still there?"))
        await publish(relay.url, tagged(alice, 9, ["h", GROUP], "dessert?"))
        await wait_until(lambda: len(fcm.requests) == 5, 15)

        # Carol registers the same token (the phone changed hands): it moves to her, Bob's filters reach nothing.
        await publish(relay.url, control(carol, REGISTER, {"token": FCM_TOKEN}, base + 20))
        await wait_until(lambda: not service.registry.devices_for(bob_hex), 10)
        assert [reg.device_token for reg in service.registry.devices_for(carol_hex)] == [FCM_TOKEN]
        carols = {"kinds": [1], "#p": [carol_hex]}
        await publish(relay.url, control(carol, UPSERT, {"filter": carols}, base + 21))
        await wait_until(lambda: asked(service, carols), 10)
        await not_pushed(tagged(alice, 9, ["h", GROUP], "anyone?"))
        await publish(relay.url, tagged(alice, 1, ["p", carol_hex], "hi carol"))
        await wait_until(lambda: len(fcm.requests) == 6, 15)
        assert fcm.requests[5].message["token"] == FCM_TOKEN

        # 3080: Carol deregisters; nothing reaches the token any more.
        await publish(relay.url, control(carol, DEREGISTER, {"token": FCM_TOKEN}, base + 30))
        await wait_until(lambda: not service.registry.devices_for(carol_hex), 10)
        assert not asked(service, carols)  # her last device: her filters went with it
        await not_pushed(tagged(alice, 1, ["p", carol_hex], "gone?"))

        # An app this server does not serve is ignored, and so is an expired registration.
        unknown = verse_results("unknown_app")
        await publish(relay.url, control(dave, REGISTER, {"token": "dave-token"}, base + 40, app="universes"))
        await wait_until(lambda: verse_results("unknown_app") > unknown, 10)
        expired = verse_results("expired")
        lapsed = control(dave, REGISTER, {"token": "dave-token"}, base + 40, expiration=int(time.time()) - 5)
        assert (await send_to_endpoint(server, lapsed))[2] is True  # a valid event; refused as a registration
        assert verse_results("expired") == expired + 1
        assert not service.registry.devices_for(dave.public_key().to_hex())
        assert len(fcm.requests) == 6
    finally:
        await server.stop()
        await fcm.stop()
