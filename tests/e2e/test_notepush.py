"""damus notepush's API end to end: devices registered as damus registers them, preferences set through its routes,
and events through a real relay that its preferences, mute list and follows silence or let through.

Authorizations are built as damus builds them (a kind 27235 with `u`, `method` and, with a body, `payload`),
with nostr-sdk as the second implementation. Each silent event is followed by one that must pass: once that one
is pushed, the events before it (sent on the same subscription) were handled, so a missing push means "silenced",
not "not yet".
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson

from pushstr.nostr.keys import Keys
from tests.e2e.clients import dm, publish
from tests.fakes import ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
TOKEN = "5ca1ab1e" * 8


def authorization(keys: nostr_sdk.Keys, method: str, url: str, body: bytes = b"", created_at: int | None = None) -> str:
    """NIP-98 as damus signs it: `u` the full URL, `method`, and `payload` (sha256 hex) only with a body."""
    tags = [nostr_sdk.Tag.parse(["u", url]), nostr_sdk.Tag.parse(["method", method])]
    if body:
        tags.append(nostr_sdk.Tag.parse(["payload", hashlib.sha256(body).hexdigest()]))
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(27235), "").tags(tags)
    if created_at is not None:
        builder = builder.custom_created_at(nostr_sdk.Timestamp.from_secs(created_at))
    event = builder.finalize(keys)
    return "Nostr " + base64.b64encode(event.as_json().encode()).decode()


class Damus:
    """One damus account talking to pushstr's notepush routes."""

    def __init__(self, server: RunningServer, keys: nostr_sdk.Keys, token: str = TOKEN) -> None:
        self.server = server
        self.keys = keys
        self.pubkey = keys.public_key().to_hex()
        self.path = f"/user-info/{self.pubkey}/{token}"

    async def call(
        self, method: str, suffix: str = "", body: Any = None, *, signer: nostr_sdk.Keys | None = None, **auth: Any
    ) -> httpx.Response:
        url = self.server.base_url + self.path + suffix
        content = orjson.dumps(body) if body is not None else b""
        header = authorization(signer or self.keys, method, url, content, **auth)
        headers = {"authorization": header, "content-type": "application/json"}
        async with httpx.AsyncClient() as client:
            return await client.request(method, url, content=content, headers=headers)


def note(author: nostr_sdk.Keys, text: str, tags: list[list[str]], kind: int = 1) -> Any:
    return (
        nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), text).tags([nostr_sdk.Tag.parse(t) for t in tags]).finalize(author)
    )


async def pushed_only(server: RunningServer, event: Any, before: int) -> None:
    """`event` is the one push after the `before` ones already logged: everything sent before it was silenced."""
    pushes = await server.wait_for_pushes(before + 1)
    await wait_until(lambda: server.service.delivery.pending == 0)
    assert [push["event_id"] for push in server.pushes()[before:]] == [event.id().to_hex()]
    assert len(pushes) == before + 1


async def test_damus_registers_sets_preferences_and_is_silenced_as_it_asked(tmp_path: Path, local_relay: Any) -> None:
    relay = await local_relay()
    server = RunningServer(make_settings(tmp_path, [relay.url], SERVER.secret_hex))
    await server.start()
    bob, alice, carol, mallory = (nostr_sdk.Keys.generate() for _ in range(4))
    bob_hex = bob.public_key().to_hex()
    damus = Damus(server, bob)
    try:
        forged = await damus.call("PUT", signer=alice)
        assert forged.status_code == 403 and forged.json()["error"] == "Forbidden"
        stale = await damus.call("PUT", created_at=int(time.time()) - 90)
        assert stale.status_code == 401 and stale.json()["error"] == "Unauthorized" and stale.json()["message"]
        ahead = await damus.call("PUT", created_at=int(time.time()) + 45)
        assert ahead.status_code == 401
        registered = await damus.call("PUT")
        assert (registered.status_code, registered.json()) == (200, {"message": "User info saved successfully"})
        assert server.service.registry.device(bob_hex, TOKEN) is not None

        defaults = await damus.call("GET", "/preferences")
        assert defaults.status_code == 200
        assert defaults.json()["reaction_notifications_enabled"] is True
        assert defaults.json()["hellthread_notifications_max_pubkeys"] == 10
        settings = {
            "zap_notifications_enabled": True,
            "mention_notifications_enabled": True,
            "repost_notifications_enabled": True,
            "reaction_notifications_enabled": False,
            "dm_notifications_enabled": True,
            "only_notifications_from_following_enabled": False,
            "hellthread_notifications_disabled": True,
            "hellthread_notifications_max_pubkeys": 10,
        }
        saved = await damus.call("PUT", "/preferences", settings)
        assert saved.status_code == 200, saved.text
        assert (await damus.call("GET", "/preferences")).json() == settings
        missing = await damus.call("PUT", "/preferences", {"zap_notifications_enabled": True})
        assert missing.status_code == 400 and missing.json()["error"] == "Invalid settings"

        mute_list = note(bob, "", [["p", mallory.public_key().to_hex()], ["word", "spoiler"], ["t", "politics"]], 10000)
        await publish(relay.url, mute_list)
        await wait_until(lambda: bob_hex in server.service.lists.mutes, timeout=15)

        await publish(relay.url, note(alice, "+", [["e", "a" * 64], ["p", bob_hex]], kind=7))  # reactions are off
        await publish(relay.url, dm(mallory, bob, "hello from a muted pubkey"))
        await publish(relay.url, note(alice, "huge SPOILER ahead", [["p", bob_hex]]))
        await publish(relay.url, note(carol, "thoughts?", [["p", bob_hex], ["t", "Politics"]]))
        crowd = [["p", nostr_sdk.Keys.generate().public_key().to_hex()] for _ in range(11)]
        await publish(relay.url, note(alice, "everyone look", [["p", bob_hex], *crowd]))  # 12 pubkeys, limit 10
        passing = note(alice, "just for you", [["p", bob_hex], *crowd[:9]])  # 10 pubkeys
        await publish(relay.url, passing)
        await pushed_only(server, passing, 0)

        settings["only_notifications_from_following_enabled"] = True
        assert (await damus.call("PUT", "/preferences", settings)).status_code == 200
        await publish(relay.url, note(bob, "", [["p", alice.public_key().to_hex()]], kind=3))
        await wait_until(lambda: bob_hex in server.service.lists.follows, timeout=15)
        await publish(relay.url, note(carol, "a stranger says hi", [["p", bob_hex]]))
        followed = note(alice, "a friend says hi", [["p", bob_hex]])
        await publish(relay.url, followed)
        await pushed_only(server, followed, 1)

        device = Keys.generate()
        keyed = await damus.call("PUT", "/encryption-key", {"device_pubkey": device.public_hex})
        assert keyed.status_code == 200
        encrypted = note(alice, "now encrypted", [["p", bob_hex]])
        await publish(relay.url, encrypted)
        await pushed_only(server, encrypted, 2)
        assert server.pushes()[-1]["mode"] == "notepush"

        async with httpx.AsyncClient() as client:
            key = (await client.get(server.base_url + "/server-pubkey")).json()
        assert key == {"pubkey": SERVER.public_hex, "encryption_enabled": True}

        removed = await damus.call("DELETE")
        assert (removed.status_code, removed.json()) == (200, {"message": "User info removed successfully"})
        assert server.service.registry.device(bob_hex, TOKEN) is None
        assert (await damus.call("GET", "/preferences")).status_code == 404
    finally:
        await server.stop()


async def test_a_body_needs_a_payload_tag_and_a_token_names_one_request(tmp_path: Path) -> None:
    server = RunningServer(make_settings(tmp_path, [], SERVER.secret_hex))
    await server.start()
    bob = nostr_sdk.Keys.generate()
    damus = Damus(server, bob)
    url = server.base_url + damus.path
    try:
        body = b'{"platform": "ios"}'
        unsigned_body = authorization(bob, "PUT", url)  # no payload tag
        async with httpx.AsyncClient() as client:
            reply = await client.put(url, content=body, headers={"authorization": unsigned_body})
            assert reply.status_code == 401 and "payload" in reply.json()["reason"]
            signed = authorization(bob, "PUT", url, body)
            reply = await client.put(url, headers={"authorization": signed})  # a payload tag, no body
            assert reply.status_code == 401
            accepted = authorization(bob, "PUT", url, body)
            reply = await client.put(url, content=body, headers={"authorization": accepted})
            assert reply.status_code == 200
            again = await client.put(url, content=body, headers={"authorization": accepted})
            assert again.status_code == 200  # the same request again (damus signs the same id within a second)
            other = await client.put(url + "/preferences", content=body, headers={"authorization": accepted})
            assert other.status_code == 401  # but for this URL only
    finally:
        await server.stop()


async def test_apns_gets_notepush_s_payload_and_after_an_encryption_key_only_ciphertext(
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    relay = await local_relay()
    app = apns_app(fake_apns, apns_key).model_dump(mode="json", exclude_none=True)
    settings = make_settings(
        tmp_path, [relay.url], SERVER.secret_hex, apps={"phone": app}, platform_apps={"ios": "phone"}
    )
    server = RunningServer(settings)
    await server.start()
    bob, alice = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    damus = Damus(server, bob)
    try:
        assert (await damus.call("PUT", body={"platform": "ios"})).status_code == 200
        mention = note(alice, "gm bob", [["p", bob.public_key().to_hex()]])
        await publish(relay.url, mention)
        await wait_until(lambda: len(fake_apns.requests) == 1, timeout=15)
        request = fake_apns.requests[0]
        assert request.device_token == TOKEN
        aps = request.payload["aps"]
        assert isinstance(aps, dict) and aps["mutable-content"] == 1 and aps["content-available"] == 1
        assert isinstance(aps["alert"], dict) and aps["alert"]["body"]
        assert request.payload["encrypted"] is False
        event = orjson.loads(str(request.payload["nostr_event"]))
        assert event["id"] == mention.id().to_hex() and event["content"] == "gm bob"

        device = nostr_sdk.Keys.generate()
        keyed = await damus.call("PUT", "/encryption-key", {"device_pubkey": device.public_key().to_hex()})
        assert keyed.status_code == 200
        secret = note(alice, "a secret mention", [["p", bob.public_key().to_hex()]])
        await publish(relay.url, secret)
        await wait_until(lambda: len(fake_apns.requests) == 2, timeout=15)
        request = fake_apns.requests[1]
        assert set(request.payload) == {"aps", "encrypted", "ciphertext"} and request.payload["encrypted"] is True
        aps = request.payload["aps"]
        assert isinstance(aps, dict) and aps["mutable-content"] == 1 and aps["content-available"] == 1
        assert aps["alert"] == {"body": "New notification"}  # no sender, no kind wording in the clear
        ciphertext = str(request.payload["ciphertext"])
        server_key = nostr_sdk.PublicKey.parse(SERVER.public_hex)
        plaintext = nostr_sdk.nip44_decrypt(device.secret_key(), server_key, ciphertext)
        assert nostr_sdk.Event.from_json(plaintext).id() == secret.id()  # what `nostr_event` would have held
    finally:
        await server.stop()
