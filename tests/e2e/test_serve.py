"""pushstr serving end to end: real LocalRelays, real HTTP + NIP-98 registration, the log transport.

Events are built by nostr-sdk (a second implementation) and published to the relays over plain WebSockets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nostr_sdk
import orjson
import websockets

from pushstr.nostr.keys import Keys
from tests.conftest import RelayHandle
from tests.e2e.clients import dm, gift_wrap, publish, register
from tests.harness import RunningServer, make_settings

ALICE = nostr_sdk.Keys.generate()
BOB = nostr_sdk.Keys.generate()
CAROL = nostr_sdk.Keys.generate()
SERVER_SECRET = Keys.generate().secret_hex


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
