"""Amethyst end to end: `POST /register` built the way the app builds it, events through real relays, wrapped pushes.

Amethyst (`RegisterAccounts.kt`) signs one kind 22242 per account (`RelayAuthEvent.create`: a `relay` tag per
NIP-65 read relay and NIP-17 DM relay, then `["challenge", <token>]`, content "", `created_at` now) and posts
`{"events": [ … ]}` as it writes it, with no Authorization header. The reference server pushes each DM, zap and
gift wrap as a kind 1059 from a random key, without tags, whose content is the event NIP-44-encrypted to the
account: FCM data `{"encryptedEvent": <wrap>}`, or the wrap as the body of a POST to a push URL. Events are built by
nostr-sdk and opened with its NIP-44, as the app opens them with its signer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Mode, Platform
from tests.conftest import RelayHandle
from tests.e2e.clients import dm, gift_wrap, publish
from tests.e2e.test_oxchat import zap_receipt
from tests.fakes.fcm import FakeFCM
from tests.fakes.http1 import Http1Endpoint
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
FCM_TOKEN = "dXk3bQ:APA91bH-amethyst-token_0123456789"


def registration_event(user: Any, relays: list[str], token: str) -> Any:
    """`RelayAuthEvent.create(relays, token, signer)`: relay tags in order, then the challenge; content ""."""
    tags = [nostr_sdk.Tag.parse(["relay", url]) for url in relays]
    tags.append(nostr_sdk.Tag.parse(["challenge", token]))
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(22242), "").tags(tags).finalize(user)


def register_body(events: list[Any]) -> str:
    """`postRegistrationEvent`'s body, whitespace and all."""
    joined = ", ".join(event.as_json() for event in events)
    return f"""{{
            "events": [ {joined} ]
        }}
        """


async def post_register(server: RunningServer, events: list[Any]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            server.base_url + "/register",
            content=register_body(events).encode(),
            headers={"content-type": "application/json; charset=utf-8"},
        )


def unwrap(user: Any, wrap_json: str) -> dict[str, Any]:
    """What `PushWrapDecryptor` does: the outer kind 1059 opened with the account's key."""
    wrap = nostr_sdk.Event.from_json(wrap_json)
    assert wrap.verify()
    assert wrap.kind().as_u16() == 1059 and wrap.tags() == []
    inner: dict[str, Any] = orjson.loads(nostr_sdk.nip44_decrypt(user.secret_key(), wrap.author(), wrap.content()))
    return inner


def as_dict(event: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(event.as_json())
    return parsed


async def test_amethyst_devices_get_their_events_wrapped(tmp_path: Path, local_relay: Any) -> None:
    relay: RelayHandle = await local_relay()
    inbox: RelayHandle = await local_relay()
    inbox_url = inbox.url + "/"  # as Amethyst normalizes relay URLs
    fcm = FakeFCM(tmp_path)
    await fcm.start()
    ntfy = Http1Endpoint(status=200)
    await ntfy.start()
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        apps={
            "amethyst": {
                "transport": "fcm",
                "base_url": fcm.url,
                "ca_file": str(fcm.ca_file),
                "service_account_file": str(fcm.write_service_account()),
            },
            # No `allow_plaintext`: a wrap is ciphertext to the account already.
            "up": {"transport": "webpush", "vapid_subject": "mailto:ops@example.com", "allowed_hosts": ["127.0.0.1"]},
        },
        dialects={"amethyst": {"fcm_app": "amethyst", "push_url_app": "up"}},
        registration={"allow_private_relays": True},
    )
    alice, bob, carol, lnurl = (nostr_sdk.Keys.generate() for _ in range(4))
    alice_hex, bob_hex = alice.public_key().to_hex(), bob.public_key().to_hex()
    push_url = f"http://127.0.0.1:{ntfy.port}/upAmethyst"
    server = RunningServer(settings)
    await server.start()

    def inbox_subscribed(service: Any) -> bool:
        return any(status.url == inbox_url and status.subscriptions for status in service.pool.status())

    try:
        # Two accounts on one phone: one request, one event each. Alice's lists the inbox relay (twice, as a
        # NIP-65 read relay and a NIP-17 DM relay); Bob's F-Droid build registers a push URL.
        answer = await post_register(
            server,
            [registration_event(alice, [inbox_url, inbox_url], FCM_TOKEN), registration_event(bob, [], push_url)],
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == [{"pubkey": alice_hex, "added": True}, {"pubkey": bob_hex, "added": True}]
        (phone,) = server.service.registry.devices_for(alice_hex)
        assert (phone.platform, phone.app, phone.mode, phone.relays) == (
            Platform.ANDROID,
            "amethyst",
            Mode.WRAPPED,
            (inbox_url,),
        )
        assert phone.kinds == frozenset({4, 9735, 1059})
        await wait_until(lambda: inbox_subscribed(server.service), 10)

        # A DM seen on both relays is pushed once, the event itself in the wrap.
        message = dm(bob, alice, "hi alice")
        await publish(inbox_url, message)
        await publish(relay.url, message)
        await wait_until(lambda: len(fcm.requests) == 1, 15)
        sent = fcm.requests[0].message
        assert sent["token"] == FCM_TOKEN and set(sent["data"]) == {"encryptedEvent"}
        assert "notification" not in sent and alice_hex not in orjson.dumps(sent).decode()
        assert unwrap(alice, sent["data"]["encryptedEvent"]) == as_dict(message)

        # A zap and a NIP-17 gift wrap, each the event it is.
        zap = zap_receipt(lnurl, carol, alice)
        await publish(inbox_url, zap)
        await wait_until(lambda: len(fcm.requests) == 2, 15)
        assert unwrap(alice, fcm.requests[1].message["data"]["encryptedEvent"]) == as_dict(zap)
        private = gift_wrap(carol, alice, "psst")
        await publish(inbox_url, private)
        await wait_until(lambda: len(fcm.requests) == 3, 15)
        assert unwrap(alice, fcm.requests[2].message["data"]["encryptedEvent"]) == as_dict(private)

        # Too large to push whole: a kind 23903 wake-up naming the event, its kind, its author and its relay.
        long_dm = dm(carol, alice, "x" * 3000)
        await publish(inbox_url, long_dm)
        await wait_until(lambda: len(fcm.requests) == 4, 15)
        wake_json = fcm.requests[3].message["data"]["encryptedEvent"]
        assert len(wake_json) <= 4000
        wake = unwrap(alice, wake_json)
        assert (wake["kind"], wake["content"]) == (23903, "")
        assert wake["tags"] == [["e", long_dm.id().to_hex(), inbox_url], ["k", "4"], ["p", carol.public_key().to_hex()]]
        assert nostr_sdk.Event.from_json(orjson.dumps(wake).decode()).verify()

        # The push URL gets the wrap as the body of a plain POST.
        to_bob = dm(carol, bob, "hi bob")
        await publish(relay.url, to_bob)
        await wait_until(lambda: len(ntfy.requests) == 1, 15)
        request = ntfy.requests[0]
        assert (request.method, request.path) == ("POST", "/upAmethyst")
        assert request.headers["content-type"].startswith("text/plain")
        assert unwrap(bob, request.body.decode()) == as_dict(to_bob)
        assert len(fcm.requests) == 4
    finally:
        await server.stop()

    # After a restart the registrations are still there and their relays watched.
    server = RunningServer(settings)
    await server.start()
    try:
        assert [reg.relays for reg in server.service.registry.devices_for(alice_hex)] == [(inbox_url,)]
        await wait_until(lambda: inbox_subscribed(server.service), 10)
        later = dm(bob, alice, "still there?")
        await publish(inbox_url, later)
        await wait_until(lambda: len(fcm.requests) == 5, 15)
        assert unwrap(alice, fcm.requests[4].message["data"]["encryptedEvent"]) == as_dict(later)
    finally:
        await server.stop()
        await fcm.stop()
        await ntfy.stop()
