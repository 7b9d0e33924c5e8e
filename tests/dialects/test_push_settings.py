"""Kind 22456 push settings end to end: real LocalRelays, events built and encrypted by nostr-sdk, the log transport.

Presence, groups, logout and the refusal of bad events are all observed from outside: lines the log transport
writes, the registry the running service holds, and the Prometheus counters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
import websockets
from prometheus_client import REGISTRY

from pushstr.nostr.keys import Keys
from tests.conftest import RelayHandle
from tests.e2e.clients import dm, publish
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
SERVER_PK = nostr_sdk.PublicKey.parse(SERVER.public_hex)
BOB = nostr_sdk.Keys.generate()
ALICE = nostr_sdk.Keys.generate()
CAROL = nostr_sdk.Keys.generate()
DEVICE = "0xchat-fcm-token-bob"
GROUP = "ab" * 32
TIMEOUT = 3.0


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def settings_event(user: Any, message: dict[str, Any], *, nip44: bool = False, at: int | None = None) -> Any:
    """A kind 22456 event from `user` to the server, NIP-04 (0xchat's choice) or NIP-44 v2 encrypted."""
    text = orjson.dumps(message).decode()
    if nip44:
        content = nostr_sdk.nip44_encrypt(user.secret_key(), SERVER_PK, text, nostr_sdk.Nip44Version.V2)
    else:
        content = nostr_sdk.nip04_encrypt(user.secret_key(), SERVER_PK, text)
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(22456), content).tags(
        [nostr_sdk.Tag.parse(["p", SERVER.public_hex])]
    )
    if at is not None:
        builder = builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at))
    return builder.finalize(user)


def channel_message(sender: Any, channel: str, text: str) -> Any:
    """A NIP-28 channel message (kind 42) in `channel`."""
    tags = [nostr_sdk.Tag.parse(["e", channel, "", "root"])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(42), text).tags(tags).finalize(sender)


async def test_push_settings_end_to_end(tmp_path: Path, local_relay: Any) -> None:
    relay: RelayHandle = await local_relay()
    group_relay: RelayHandle = await local_relay()
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        dialects={"push_settings": {"heartbeat_timeout_seconds": TIMEOUT}},
        registration={"allow_private_relays": True},
    )
    server = RunningServer(settings)
    await server.start()
    service = server.service
    bob = BOB.public_key().to_hex()
    presence = service.presence

    def registered() -> list[str]:
        return [reg.device_token for reg in service.registry.devices_for(bob) if reg.dialect == "push-settings"]

    async def handled(event: Any) -> None:
        """Wait until pushstr has seen an event (admission and matching run in one step)."""
        await wait_until(lambda: event.id().to_hex() in service.seen, 10)

    try:
        assert "push-settings" in (await _info(server))["dialects"]
        # The settings subscription is live once the relay has answered it.
        await wait_until(lambda: any(status.eose for status in service.pool.status()), 10)
        now = int(time.time())

        # Settings (NIP-04, as 0xchat sends them): the device, its group, and a relay to watch for it.
        message = {
            "kinds": [4, 1059, 42],
            "deviceId": DEVICE,
            "relays": [group_relay.url],
            "#e": [GROUP],
            "#p": [bob],
            "authors": [],
        }
        await publish(relay.url, settings_event(BOB, message, at=now))
        await wait_until(lambda: registered() == [DEVICE], 10)
        await wait_until(lambda: service.pool.watches(group_relay.url), 5)
        # `/info` names the operator's relays only: which relays users listed is theirs to know.
        info = await _info(server)
        assert info["relays"] == [relay.url] and info["other_relays"] == 1
        assert group_relay.url not in str(info)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(server.base_url + "/metrics")).text
        assert f'relay="{relay.url}"' in metrics and 'relay="user-' in metrics
        assert group_relay.url not in metrics

        # Online (a NIP-44 heartbeat): a DM is held back, and not pushed later either.
        held = metric("pushstr_policy_held_back_total", reason="online")
        await publish(relay.url, settings_event(BOB, {"online": 1}, nip44=True, at=now))
        await wait_until(lambda: presence.is_online(bob, DEVICE), 5)
        while_online = dm(ALICE, BOB, "you are online")
        await publish(relay.url, while_online)
        await handled(while_online)
        assert metric("pushstr_policy_held_back_total", reason="online") == held + 1

        # No heartbeat for the timeout: offline, pushes resume.
        await wait_until(lambda: not presence.is_online(bob, DEVICE), TIMEOUT + 5)
        after_timeout = dm(ALICE, BOB, "gone quiet")
        await publish(relay.url, after_timeout)
        pushes = await server.wait_for_pushes(1)
        assert [push["event_id"] for push in pushes] == [after_timeout.id().to_hex()]
        assert pushes[0]["platform"] == "android" and pushes[0]["device"] != DEVICE

        # Online again, then {"online": 0}: offline at once. An older heartbeat arriving late changes nothing.
        now = int(time.time())
        await publish(relay.url, settings_event(BOB, {"online": 1}, at=now))
        await wait_until(lambda: presence.is_online(bob, DEVICE), 5)
        await publish(relay.url, settings_event(BOB, {"online": 0}, nip44=True, at=now + 1))
        await wait_until(lambda: not presence.is_online(bob, DEVICE), 5)
        stale = metric("pushstr_push_settings_events_total", result="stale")
        await publish(relay.url, settings_event(BOB, {"online": 1}, at=now))
        await wait_until(lambda: metric("pushstr_push_settings_events_total", result="stale") == stale + 1, 5)
        assert not presence.is_online(bob, DEVICE)
        after_offline = dm(CAROL, BOB, "offline now")
        await publish(relay.url, after_offline)
        pushes = await server.wait_for_pushes(2)
        assert pushes[1]["event_id"] == after_offline.id().to_hex()

        # A message in the group, published only on the relay the device listed: pushed to Bob.
        in_group = channel_message(CAROL, GROUP, "hello channel")
        await publish(group_relay.url, in_group)
        pushes = await server.wait_for_pushes(3)
        assert pushes[2]["event_id"] == in_group.id().to_hex()
        assert pushes[2]["recipient"] == bob and pushes[2]["kind"] == 42

        # Bad events: garbage content, content encrypted to another key, a bad signature — ignored, counted.
        undecryptable = metric("pushstr_push_settings_events_total", result="undecryptable")
        bad_signatures = metric("pushstr_events_rejected_total", reason="bad_signature")
        garbage = nostr_sdk.EventBuilder(nostr_sdk.Kind(22456), "not encrypted at all").tags(
            [nostr_sdk.Tag.parse(["p", SERVER.public_hex])]
        )
        await publish(relay.url, garbage.finalize(BOB))
        stranger = nostr_sdk.Keys.generate().public_key()
        wrong_key = nostr_sdk.nip04_encrypt(BOB.secret_key(), stranger, orjson.dumps({"online": 0}).decode())
        misdirected = nostr_sdk.EventBuilder(nostr_sdk.Kind(22456), wrong_key).tags(
            [nostr_sdk.Tag.parse(["p", SERVER.public_hex])]
        )
        await publish(relay.url, misdirected.finalize(BOB))
        forged = orjson.loads(settings_event(BOB, {"kinds": [1], "deviceId": "intruder"}).as_json())
        forged["sig"] = forged["sig"][:-2] + ("00" if forged["sig"][-2:] != "00" else "11")
        reply = await send_to_endpoint(server, forged)
        assert reply[2] is False and reply[3].startswith("invalid:")
        await wait_until(
            lambda: metric("pushstr_push_settings_events_total", result="undecryptable") == undecryptable + 2, 5
        )
        assert metric("pushstr_events_rejected_total", reason="bad_signature") == bad_signatures + 1
        assert registered() == [DEVICE]

        # Logout: the registration is deleted, the device's relay dropped, and nothing is pushed any more.
        await publish(relay.url, settings_event(BOB, {"online": 0, "deviceId": ""}, nip44=True))
        await wait_until(lambda: registered() == [], 5)
        await wait_until(lambda: not service.pool.watches(group_relay.url), 5)
        # Relays are no longer asked for Bob's events; one handed to the endpoint directly matches nobody.
        after_logout = dm(ALICE, BOB, "anyone there?")
        assert await send_to_endpoint(server, after_logout) == ["OK", after_logout.id().to_hex(), True, ""]
        assert [push["event_id"] for push in server.pushes()] == [
            after_timeout.id().to_hex(),
            after_offline.id().to_hex(),
            in_group.id().to_hex(),
        ]
    finally:
        await server.stop()


async def test_settings_survive_a_restart(tmp_path: Path, local_relay: Any) -> None:
    """Settings are stored like any registration: groups and relays come back after a restart."""
    relay: RelayHandle = await local_relay()
    group_relay: RelayHandle = await local_relay()
    settings = make_settings(tmp_path, [relay.url], SERVER.secret_hex, registration={"allow_private_relays": True})
    server = RunningServer(settings)
    await server.start()
    try:
        await wait_until(lambda: any(status.eose for status in server.service.pool.status()), 10)
        message = {"kinds": [42], "deviceId": "tablet", "relays": [group_relay.url], "#e": [GROUP]}
        await publish(relay.url, settings_event(ALICE, message, nip44=True))
        await wait_until(lambda: bool(server.service.registry.devices_for_group(GROUP)), 10)
    finally:
        await server.stop()
    restarted = RunningServer(settings)
    await restarted.start()
    try:
        assert restarted.service.pool.watches(group_relay.url)
        in_group = channel_message(CAROL, GROUP, "after the restart")
        await publish(group_relay.url, in_group)
        pushes = await restarted.wait_for_pushes(1)
        assert pushes[0]["event_id"] == in_group.id().to_hex()
        assert pushes[0]["recipient"] == ALICE.public_key().to_hex()
    finally:
        await restarted.stop()


async def _info(server: RunningServer) -> Any:
    async with httpx.AsyncClient() as client:
        return (await client.get(server.base_url + "/info")).json()


async def send_to_endpoint(server: RunningServer, event: Any) -> Any:
    """Hand one event to pushstr's built-in relay endpoint; its OK comes after the pipeline has run."""
    payload = event.as_json() if hasattr(event, "as_json") else orjson.dumps(event).decode()
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(f'["EVENT",{payload}]')
        return orjson.loads(await ws.recv())
