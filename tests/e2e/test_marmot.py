"""Marmot Push v1 end to end: triggers gift-wrapped to the server through a real relay become silent pushes.

Triggers are built as Marmot clients build them (`tests.dialects.marmot_client`), wrapped once with pushstr's
NIP-59 helpers and once with nostr-sdk's; a user's own NIP-17 message, also a kind 1059, still reaches the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nostr_sdk

from pushstr.nostr.keys import Keys
from tests.conftest import RelayHandle
from tests.dialects.marmot_client import APNS, FCM, content_of, padding_chunk, sdk_trigger, seal_token, trigger
from tests.e2e.clients import gift_wrap, publish, register
from tests.fakes import ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.fakes.fcm import FakeFCM
from tests.fakes.strict_relay import StrictRelay
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
ALICE = nostr_sdk.Keys.generate()
BOB = nostr_sdk.Keys.generate()
APNS_TOKEN = bytes(range(7, 39))
FCM_TOKENS = (b"marmot-fcm-1:APA91b", b"marmot-fcm-2:APA91b", b"marmot-fcm-3:APA91b")


async def test_triggers_wake_every_token_silently_and_dms_still_reach_users(tmp_path: Path, local_relay: Any) -> None:
    relay: RelayHandle = await local_relay()
    big_frames = StrictRelay()  # strfry's frame limit (128 KiB); nostr-sdk's LocalRelay refuses events over 64 KiB
    await big_frames.start()
    server = RunningServer(make_settings(tmp_path, [relay.url, big_frames.url], SERVER.secret_hex))
    await server.start()
    try:
        await register(server, BOB, "bob-phone")
        tampered = bytearray(seal_token(SERVER.public_hex, FCM, b"tampered-token"))
        tampered[60] ^= 0x80
        chunks = [
            padding_chunk(),
            seal_token(SERVER.public_hex, APNS, APNS_TOKEN),
            seal_token(SERVER.public_hex, FCM, FCM_TOKENS[0]),
            bytes(tampered),
            padding_chunk(),
            seal_token(SERVER.public_hex, FCM, FCM_TOKENS[1]),
        ]
        wrap = trigger(SERVER.public_hex, content_of(chunks))
        await publish(relay.url, wrap.to_dict())
        pushes = await server.wait_for_pushes(3)
        assert len(pushes) == 3
        assert sorted(push["platform"] for push in pushes) == ["android", "android", "ios"]
        for push in pushes:
            assert push["kind"] == 446 and push["mode"] == "silent" and push["event_id"] == wrap.id
            assert push["recipient"] == SERVER.public_hex  # the devices belong to no user
        logged = server.log_path.read_text()
        assert APNS_TOKEN.hex() not in logged and not any(token.decode() in logged for token in FCM_TOKENS)

        # A user's own NIP-17 message is a gift wrap too: it is pushed to the user, as before.
        dm = gift_wrap(ALICE, BOB, "hi bob")
        await publish(relay.url, dm)
        pushes = await server.wait_for_pushes(4)
        assert (pushes[3]["kind"], pushes[3]["recipient"]) == (1059, BOB.public_key().to_hex())
        assert pushes[3]["event_id"] == dm.id().to_hex()

        # A trigger gift-wrapped by nostr-sdk (a second NIP-59 implementation).
        sdk_wrap = sdk_trigger(
            SERVER.public_hex, content_of([seal_token(SERVER.public_hex, FCM, FCM_TOKENS[2]), padding_chunk()])
        )
        await publish(relay.url, sdk_wrap)
        pushes = await server.wait_for_pushes(5)
        assert (pushes[4]["kind"], pushes[4]["platform"], pushes[4]["event_id"]) == (
            446,
            "android",
            sdk_wrap.id().to_hex(),
        )

        # A full trigger (32 chunks) gift-wraps to about 110 KB, over the 64 KiB event limit: relays carry it, and
        # so does pushstr's relay connection, for a gift wrap addressed to the server.
        full = trigger(
            SERVER.public_hex,
            content_of([seal_token(SERVER.public_hex, APNS, APNS_TOKEN[::-1])] + [padding_chunk()] * 31),
        )
        assert len(full.to_json()) > 100_000
        await publish(big_frames.url, full.to_dict())
        pushes = await server.wait_for_pushes(6)
        assert (pushes[5]["kind"], pushes[5]["platform"], pushes[5]["event_id"]) == (446, "ios", full.id)

        # Nothing was registered: Bob's phone is the only device pushstr knows.
        assert [reg.device_token for reg in server.service.registry.registrations()] == ["bob-phone"]
    finally:
        await server.stop()
        await big_frames.stop()


async def test_triggers_reach_apns_and_fcm_as_the_protocol_asks(
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    """APNs: background push, priority 5, `{"aps": {"content-available": 1}}`; FCM: data-only, high priority,
    `content_available: "true"`; each valid chunk once, nothing for padding."""
    relay: RelayHandle = await local_relay()
    fcm = FakeFCM(tmp_path)
    await fcm.start()
    fcm_app = {
        "transport": "fcm",
        "base_url": fcm.url,
        "ca_file": str(fcm.ca_file),
        "service_account_file": str(fcm.write_service_account()),
    }
    apps = {"phone": apns_app(fake_apns, apns_key).model_dump(mode="json", exclude_none=True), "droid": fcm_app}
    settings = make_settings(
        tmp_path, [relay.url], SERVER.secret_hex, apps=apps, platform_apps={"ios": "phone", "android": "droid"}
    )
    server = RunningServer(settings)
    await server.start()
    try:
        chunks = [
            seal_token(SERVER.public_hex, APNS, APNS_TOKEN),
            padding_chunk(),
            seal_token(SERVER.public_hex, FCM, FCM_TOKENS[0]),
        ]
        await publish(relay.url, trigger(SERVER.public_hex, content_of(chunks)).to_dict())
        request = await fake_apns.next_request(timeout=15)
        await wait_until(lambda: len(fcm.requests) == 1 and server.service.delivery.pending == 0)
    finally:
        await server.stop()
        await fcm.stop()
    assert len(fake_apns.requests) == 1 and len(fcm.requests) == 1
    assert request.device_token == APNS_TOKEN.hex()
    assert (request.headers["apns-push-type"], request.headers["apns-priority"]) == ("background", "5")
    assert request.payload["aps"] == {"content-available": 1}
    message = fcm.requests[0].message
    assert message["token"] == FCM_TOKENS[0].decode()
    assert message["data"]["content_available"] == "true"
    assert message["android"]["priority"] == "high" and "notification" not in message
