"""0xchat devices end to end: kind 22456 events built the way 0xchat-core builds them, through real relays.

0xchat (`lib/src/account/notification.dart`) encrypts with NIP-04 to the server key, tags exactly
`[["p", <server>]]`, and sends settings `{"authors", "kinds", "deviceId", "relays", "#e", "#p"}` with no `online`
and no platform; heartbeats are `{"online": 1}` and going to background `{"online": 0}`, without a deviceId. The
iOS deviceId is the bundle id followed by the APNs token in hex; the Android one a UnifiedPush endpoint URL, pushed
in plaintext. Events are built by nostr-sdk (a second implementation), delivered to a fake APNs over HTTP/2 + TLS
and to a UnifiedPush endpoint over HTTP/1.1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nostr_sdk
import orjson
from prometheus_client import REGISTRY

from pushstr.engine.pipeline import NOTIFICATIONS
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform
from pushstr.relays.urls import normalize_relay_url
from tests.conftest import RelayHandle
from tests.dialects.test_push_settings import send_to_endpoint
from tests.e2e.clients import dm, publish
from tests.fakes import APNS_TOPIC, ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.fakes.http1 import Http1Endpoint
from tests.guides import run_guide
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
SERVER_PK = nostr_sdk.PublicKey.parse(SERVER.public_hex)
#: What 0xchat asks for with every toggle on.
OXCHAT_KINDS = [4, 44, 1059, 42, 9735, 9, 10, 1, 6, 7]
APNS_TOKEN = "7e" * 32
GROUP = "pizza-lovers"


def oxchat_event(user: Any, message: dict[str, Any], at: int | None = None) -> Any:
    """A kind 22456 event exactly as 0xchat sends it: NIP-04 content, one `p` tag naming the server."""
    content = nostr_sdk.nip04_encrypt(user.secret_key(), SERVER_PK, orjson.dumps(message).decode())
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(22456), content).tags(
        [nostr_sdk.Tag.parse(["p", SERVER.public_hex])]
    )
    if at is not None:
        builder = builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at))
    return builder.finalize(user)


def oxchat_settings(user: Any, device_id: str, **fields: Any) -> dict[str, Any]:
    message = {
        "authors": [],
        "kinds": OXCHAT_KINDS,
        "deviceId": device_id,
        "relays": [],
        "#e": [],
        "#p": [user.public_key().to_hex()],
    }
    return {**message, **fields}


def zap_receipt(lnurl_server: Any, zapper: Any, recipient: Any) -> Any:
    """A NIP-57 receipt signed by the recipient's LNURL server, embedding the zapper's signed zap request."""
    recipient_hex = recipient.public_key().to_hex()
    request = (
        nostr_sdk.EventBuilder(nostr_sdk.Kind(9734), "")
        .tags([nostr_sdk.Tag.parse(["p", recipient_hex]), nostr_sdk.Tag.parse(["amount", "21000"])])
        .finalize(zapper)
    )
    tags = [nostr_sdk.Tag.parse(["p", recipient_hex]), nostr_sdk.Tag.parse(["description", request.as_json()])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(9735), "").tags(tags).finalize(lnurl_server)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_oxchat_ios_and_android_devices(
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    relay: RelayHandle = await local_relay()
    group_relay: RelayHandle = await local_relay()
    unifiedpush = Http1Endpoint(status=200)
    await unifiedpush.start()
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        apps={
            "phone": apns_app(fake_apns, apns_key).model_dump(mode="json", exclude_none=True),
            "up": {
                "transport": "webpush",
                "vapid_subject": "mailto:ops@example.com",
                "allow_plaintext": True,
                "allowed_hosts": ["127.0.0.1"],
            },
        },
        dialects={"push_settings": {"heartbeat_timeout_seconds": 120}},
        registration={"allow_private_relays": True},
    )
    server = RunningServer(settings)
    await server.start()
    service = server.service
    alice, bob, carol, dave = (nostr_sdk.Keys.generate() for _ in range(4))
    zapper, stranger, lnurl = (nostr_sdk.Keys.generate() for _ in range(3))
    bob_hex, dave_hex = bob.public_key().to_hex(), dave.public_key().to_hex()
    endpoint = f"http://127.0.0.1:{unifiedpush.port}/UP?token=dave"

    async def handled(event: Any) -> None:
        await wait_until(lambda: event.id().to_hex() in service.seen, 10)

    try:
        await wait_until(lambda: any(status.eose for status in service.pool.status()), 10)

        # iOS: bundle id + APNs token, a NIP-29 group on another relay, contacts in `authors`; no `online`. The
        # event reaches the relay 20 minutes after it was made (0xchat re-sends it on a later reconnect).
        group_host = group_relay.url.removeprefix("ws://")
        message = oxchat_settings(
            bob,
            APNS_TOPIC + APNS_TOKEN,
            authors=[alice.public_key().to_hex(), zapper.public_key().to_hex()],
            relays=[group_relay.url],
            **{"#e": [f"{group_host}'{GROUP}", "not a group"]},
        )
        await publish(relay.url, oxchat_event(bob, message, at=int(time.time()) - 20 * 60))
        await wait_until(lambda: bool(service.registry.devices_for(bob_hex)), 10)
        (iphone,) = service.registry.devices_for(bob_hex)
        assert (iphone.platform, iphone.app, iphone.device_token) == (Platform.IOS, "phone", APNS_TOKEN)
        assert metric("pushstr_push_settings_entries_ignored_total", field="groups", reason="invalid") >= 1

        # A DM from a contact: an alert on the phone.
        await publish(relay.url, dm(alice, bob, "hi bob"))
        await wait_until(lambda: len(fake_apns.requests) == 1, 15)
        request = fake_apns.requests[0]
        assert request.device_token == APNS_TOKEN and request.headers["apns-topic"] == APNS_TOPIC
        assert isinstance(request.payload["aps"], dict) and "alert" in request.payload["aps"]
        assert "hi bob" not in str(request.payload)

        # A zap from a contact is pushed; one from a stranger is held back by `authors`.
        held = metric("pushstr_policy_held_back_total", reason="author")
        await publish(relay.url, zap_receipt(lnurl, zapper, bob))
        await wait_until(lambda: len(fake_apns.requests) == 2, 15)
        from_stranger = zap_receipt(lnurl, stranger, bob)
        await publish(relay.url, from_stranger)
        await handled(from_stranger)
        assert metric("pushstr_policy_held_back_total", reason="author") == held + 1

        # A message in the NIP-29 group, published only on the group's relay, by someone not in `authors`.
        group_url = normalize_relay_url(group_relay.url)  # registrations keep relay URLs in their one spelling
        await wait_until(lambda: any(s.url == group_url and s.subscriptions for s in service.pool.status()), 10)
        in_group = nostr_sdk.EventBuilder(nostr_sdk.Kind(9), "hello group").tags([nostr_sdk.Tag.parse(["h", GROUP])])
        await publish(group_relay.url, in_group.finalize(carol))
        await wait_until(lambda: len(fake_apns.requests) == 3, 15)

        # Android: a UnifiedPush endpoint without keys, pushed in plaintext with the body 0xchat reads.
        await publish(relay.url, oxchat_event(dave, oxchat_settings(dave, endpoint)))
        await wait_until(lambda: bool(service.registry.devices_for(dave_hex)), 10)
        assert service.registry.devices_for(dave_hex)[0].platform is Platform.UNIFIEDPUSH
        await publish(relay.url, dm(alice, dave, "hi dave"))
        await wait_until(lambda: len(unifiedpush.requests) == 1, 15)
        body = orjson.loads(unifiedpush.requests[0].body)
        assert isinstance(body["notification"]["title"], str) and body["notification"]["body"]
        assert isinstance(body["data"], dict)
        assert "hi dave" not in unifiedpush.requests[0].body.decode()

        # In the foreground 0xchat beats `{"online": 1}`: nothing is pushed; `{"online": 0}` resumes pushes.
        held = metric("pushstr_policy_held_back_total", reason="online")
        await publish(relay.url, oxchat_event(dave, {"online": 1}))
        await wait_until(lambda: service.presence.is_online(dave_hex, endpoint), 10)
        while_online = dm(carol, dave, "you are here")
        await publish(relay.url, while_online)
        await handled(while_online)
        assert metric("pushstr_policy_held_back_total", reason="online") == held + 1
        await publish(relay.url, oxchat_event(dave, {"online": 0}, at=int(time.time()) + 1))
        await wait_until(lambda: not service.presence.is_online(dave_hex, endpoint), 10)
        await publish(relay.url, dm(carol, dave, "back in your pocket"))
        await wait_until(lambda: len(unifiedpush.requests) == 2, 15)

        # Push turned off in the app: `"kinds": []` keeps the device and pushes it nothing.
        await publish(relay.url, oxchat_event(dave, oxchat_settings(dave, endpoint, kinds=[]), at=int(time.time()) + 2))
        await wait_until(lambda: service.registry.devices_for(dave_hex)[0].kinds == frozenset(), 10)
        queued = NOTIFICATIONS.value("queued")
        muted = dm(alice, dave, "push is off")
        # The built-in endpoint answers after the pipeline ran: had the DM matched, it would be queued by then.
        assert await send_to_endpoint(server, muted) == ["OK", muted.id().to_hex(), True, ""]
        assert NOTIFICATIONS.value("queued") == queued
        assert len(unifiedpush.requests) == 2
    finally:
        await server.stop()
        await unifiedpush.stop()


async def test_the_client_guide_snippet_registers_a_device(tmp_path: Path, local_relay: Any) -> None:
    """docs/clients/push-settings.mjs, run by node with nostr-tools, registers through a real relay."""
    relay: RelayHandle = await local_relay()
    server = RunningServer(make_settings(tmp_path, [relay.url], SERVER.secret_hex))
    await server.start()
    user = Keys.generate()
    try:
        await wait_until(lambda: any(status.eose for status in server.service.pool.status()), 10)
        code, answer = await run_guide(
            "push-settings.mjs", relay.url, SERVER.public_hex, user.secret_hex, APNS_TOKEN, "[4, 1059]"
        )
        assert code == 0 and answer["accepted"], answer
        await wait_until(lambda: bool(server.service.registry.devices_for(user.public_hex)), 10)
        (device,) = server.service.registry.devices_for(user.public_hex)
        assert (device.platform, device.device_token, device.kinds) == (Platform.IOS, APNS_TOKEN, frozenset({4, 1059}))
    finally:
        await server.stop()
