"""pushstr serving end to end: real LocalRelays, real HTTP + NIP-98 registration, the log transport.

Events are built by nostr-sdk (a second implementation) and published to the relays over plain WebSockets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
import websockets

from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from tests.conftest import RelayHandle
from tests.harness import RunningServer, make_settings

ALICE = nostr_sdk.Keys.generate()
BOB = nostr_sdk.Keys.generate()
CAROL = nostr_sdk.Keys.generate()
SERVER_SECRET = Keys.generate().secret_hex


async def publish(relay_url: str, event: Any) -> None:
    """Send one event to a relay and wait for its OK."""
    payload = event.as_json() if hasattr(event, "as_json") else orjson.dumps(event).decode()
    async with websockets.connect(relay_url) as ws:
        await ws.send(f'["EVENT",{payload}]')
        reply = orjson.loads(await ws.recv())
    assert reply[0] == "OK" and reply[2] is True, reply


def dm(sender: Any, recipient: Any, text: str) -> Any:
    """A NIP-04 direct message (kind 4)."""
    content = nostr_sdk.nip04_encrypt(sender.secret_key(), recipient.public_key(), text)
    tags = [nostr_sdk.Tag.parse(["p", recipient.public_key().to_hex()])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(4), content).tags(tags).finalize(sender)


def gift_wrap(sender: Any, recipient: Any, text: str) -> Any:
    """A NIP-17 private message: kind 14 rumor, sealed and gift-wrapped (kind 1059)."""
    tags = [nostr_sdk.Tag.parse(["p", recipient.public_key().to_hex()])]
    rumor = nostr_sdk.EventBuilder(nostr_sdk.Kind(14), text).tags(tags).finalize_unsigned(sender.public_key())
    return nostr_sdk.nip59_make_gift_wrap(sender, recipient.public_key(), rumor)


async def register(server: RunningServer, user: Any, token: str) -> None:
    secret = Keys(bytes.fromhex(user.secret_key().to_hex()))
    body = orjson.dumps({"npub": nip19.npub_encode(secret.public_hex), "device_token": token, "platform": "android"})
    url = server.base_url + "/register"
    header = build_authorization(secret, "POST", url, body)
    async with httpx.AsyncClient() as client:
        response = await client.post(url, content=body, headers={"authorization": header})
    assert response.status_code == 201, response.text


def _ids(pushes: list[dict[str, Any]]) -> list[str]:
    return [push["event_id"] for push in pushes]


async def test_end_to_end(tmp_path: Path, local_relay: Any) -> None:
    relay_a: RelayHandle = await local_relay()
    relay_b: RelayHandle = await local_relay()
    settings = make_settings(tmp_path, [relay_a.url, relay_b.url], SERVER_SECRET)
    server = RunningServer(settings)
    await server.start()
    try:
        await register(server, BOB, "bob-phone")

        # A NIP-17 gift wrap and a NIP-04 DM to the registered npub: one line each.
        wrap = gift_wrap(ALICE, BOB, "hi bob")
        await publish(relay_a.url, wrap)
        pushes = await server.wait_for_pushes(1)
        assert pushes[0]["kind"] == 1059
        assert pushes[0]["recipient"] == BOB.public_key().to_hex()
        assert pushes[0]["platform"] == "android"
        assert pushes[0]["device"] != "bob-phone"  # only a digest of the token is written

        # An event to an unregistered npub is not pushed; the same DM on two relays is pushed once.
        await publish(relay_a.url, dm(ALICE, CAROL, "nobody listens"))
        message = dm(ALICE, BOB, "twice")
        await publish(relay_a.url, message)
        await publish(relay_b.url, message)
        marker = dm(CAROL, BOB, "marker")
        await publish(relay_b.url, marker)
        pushes = await server.wait_for_pushes(3)
        assert _ids(pushes) == [wrap.id().to_hex(), message.id().to_hex(), marker.id().to_hex()]

        # Relay killed and restarted: what was published before pushstr reconnected still arrives.
        relay_a.stop()
        await relay_a.start()
        missed = dm(ALICE, BOB, "while you were away")
        await publish(relay_a.url, missed)
        pushes = await server.wait_for_pushes(4)
        assert _ids(pushes)[3] == missed.id().to_hex()

        # The built-in endpoint: OK true and a line.
        direct = dm(CAROL, BOB, "straight to pushstr")
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(f'["EVENT",{direct.as_json()}]')
            assert orjson.loads(await ws.recv()) == ["OK", direct.id().to_hex(), True, ""]
        pushes = await server.wait_for_pushes(5)
        assert _ids(pushes)[4] == direct.id().to_hex()
    finally:
        await server.stop()

    # pushstr restarted: registrations kept, old events (still on the relays) not pushed again.
    restarted = RunningServer(settings)
    await restarted.start()
    try:
        assert [reg.device_token for reg in restarted.service.registry.devices_for(BOB.public_key().to_hex())] == [
            "bob-phone"
        ]
        fresh = dm(ALICE, BOB, "after the restart")
        await publish(relay_b.url, fresh)
        pushes = await restarted.wait_for_pushes(6)
        assert _ids(pushes)[5] == fresh.id().to_hex()
        assert len(_ids(pushes)) == len(set(_ids(pushes))) == 6
    finally:
        await restarted.stop()


async def test_endpoint_answers_per_nip01(tmp_path: Path) -> None:
    server = RunningServer(make_settings(tmp_path, [], SERVER_SECRET, endpoint={"events_per_minute": 3}))
    await server.start()
    try:
        good = dm(ALICE, CAROL, "to nobody registered")
        forged = orjson.loads(dm(ALICE, CAROL, "forged").as_json()) | {"content": "changed"}
        async with websockets.connect(server.ws_url) as ws:

            async def ask(message: str) -> Any:
                await ws.send(message)
                return orjson.loads(await ws.recv())

            assert await ask(f'["EVENT",{good.as_json()}]') == ["OK", good.id().to_hex(), True, ""]
            duplicate = await ask(f'["EVENT",{good.as_json()}]')
            assert duplicate[2] is True and duplicate[3].startswith("duplicate:")
            bad = await ask(orjson.dumps(["EVENT", forged]).decode())
            assert bad[2] is False and bad[3].startswith("invalid:")
            limited = await ask(f'["EVENT",{good.as_json()}]')
            assert limited[2] is False and limited[3].startswith("rate-limited:")
            assert (await ask('["REQ","s1",{"kinds":[1]}]'))[:2] == ["CLOSED", "s1"]
            assert (await ask("not json"))[0] == "NOTICE"
            assert (await ask('{"an": "object"}'))[0] == "NOTICE"
        assert server.pushes() == []
    finally:
        await server.stop()
