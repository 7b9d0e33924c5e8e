"""Preferences for every dialect, end to end: a device registered through HTTP + NIP-98 sets them with
`PUT /preferences` and, through a real relay, sees small zaps silenced, private mutes honoured, replies in a thread
it was notified about reaching it without a `p` tag, and pushes inside quiet hours arriving as one summary when the
window ends (the stage's clock injected)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
from prometheus_client import REGISTRY

from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from tests.e2e.clients import publish, register
from tests.e2e.test_notepush import note, pushed_only
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def set_preferences(server: RunningServer, user: nostr_sdk.Keys, body: dict[str, Any]) -> dict[str, Any]:
    keys = Keys(bytes.fromhex(user.secret_key().to_hex()))
    content = orjson.dumps(body)
    url = server.base_url + "/preferences"
    async with httpx.AsyncClient() as client:
        reply = await client.put(
            url, content=content, headers={"authorization": build_authorization(keys, "PUT", url, content)}
        )
    assert reply.status_code == 200, reply.text
    document: dict[str, Any] = reply.json()
    return document


def zap(zapper: nostr_sdk.Keys, recipient: nostr_sdk.Keys, sats: int) -> Any:
    """A NIP-57 receipt as an LNURL server signs it: the zap request in `description`, the paid invoice in `bolt11`."""
    request = note(zapper, "", [["p", recipient.public_key().to_hex()], ["amount", str(sats * 1000)]], kind=9734)
    tags = [
        ["p", recipient.public_key().to_hex()],
        ["bolt11", f"lnbc{sats * 10}n1pexample"],
        ["description", request.as_json()],
    ]
    return note(nostr_sdk.Keys.generate(), "", tags, kind=9735)


async def test_zap_threshold_private_mutes_and_thread_following(tmp_path: Path, local_relay: Any) -> None:
    relay = await local_relay()
    server = RunningServer(make_settings(tmp_path, [relay.url], SERVER.secret_hex))
    await server.start()
    bob, alice, carol, mallory = (nostr_sdk.Keys.generate() for _ in range(4))
    bob_hex = bob.public_key().to_hex()
    try:
        await register(server, bob, "bob-phone")
        hidden = nostr_sdk.nip44_encrypt(
            bob.secret_key(),
            nostr_sdk.PublicKey.parse(SERVER.public_hex),
            orjson.dumps([["p", mallory.public_key().to_hex()]]).decode(),
            nostr_sdk.Nip44Version.V2,
        )
        shown = await set_preferences(
            server, bob, {"zap_min_sats": 21, "thread_following": True, "private_mutes": hidden}
        )
        (device,) = shown["devices"]
        assert device["preferences"]["zap_min_sats"] == 21 and device["preferences"]["private_mutes"] == 1
        assert hidden not in orjson.dumps(shown).decode() and mallory.public_key().to_hex() not in str(shown)

        await publish(relay.url, zap(alice, bob, 10))
        await publish(relay.url, note(mallory, "privately muted", [["p", bob_hex]]))
        big = zap(alice, bob, 21)
        await publish(relay.url, big)
        await pushed_only(server, big, 0)

        question = note(alice, "what do you think?", [["p", bob_hex]])
        await publish(relay.url, question)
        await pushed_only(server, question, 1)
        # Carol's reply names Alice only: pushstr asks the relay for replies to the thread it followed for Bob.
        reply = note(carol, "I agree", [["e", question.id().to_hex(), "", "root"], ["p", alice.public_key().to_hex()]])
        await publish(relay.url, reply)
        await pushed_only(server, reply, 2)
        assert server.pushes()[-1]["recipient"] == bob_hex
    finally:
        await server.stop()


async def test_pushes_inside_quiet_hours_arrive_as_one_summary_when_the_window_ends(
    tmp_path: Path, local_relay: Any
) -> None:
    """Three pushes held, the server restarted inside the window, one summary of all three when it ends."""
    relay = await local_relay()
    settings = make_settings(tmp_path, [relay.url], SERVER.secret_hex)
    server = RunningServer(settings)
    clock = Clock()
    server.service.policy.clock = clock
    await server.start()
    bob, alice = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    bob_hex = bob.public_key().to_hex()
    now = datetime.now(UTC)
    minute = now.hour * 60 + now.minute
    start, end = (minute - 60) % 1440, (minute + 60) % 1440
    held = REGISTRY.get_sample_value("pushstr_quiet_hours_total", {"result": "held"}) or 0.0
    try:
        await register(server, bob, "bob-phone")
        quiet = {
            "timezone": "UTC",
            "start": f"{start // 60:02d}:{start % 60:02d}",
            "end": f"{end // 60:02d}:{end % 60:02d}",
        }
        await set_preferences(server, bob, {"quiet_hours": quiet})
        events = [note(alice, f"message {n}", [["p", bob_hex]]) for n in range(3)]
        for event in events:
            await publish(relay.url, event)
        await wait_until(lambda: REGISTRY.get_sample_value("pushstr_quiet_hours_total", {"result": "held"}) == held + 3)
        assert server.pushes() == []
    finally:
        await server.stop()
    restarted = RunningServer(settings)
    restarted.service.policy.clock = clock
    restarted.service.policy.check_interval = 0.05
    await restarted.start()
    try:
        clock.offset = 2 * 3600  # the window is over
        (summary,) = await restarted.wait_for_pushes(1)
        assert summary["count"] == 3 and summary["recipient"] == bob_hex
        assert summary["event_id"] in {event.id().to_hex() for event in events}  # the latest to arrive
    finally:
        await restarted.stop()


async def test_a_test_push_reports_each_device_s_answer_and_is_rate_limited(tmp_path: Path) -> None:
    server = RunningServer(make_settings(tmp_path, [], SERVER.secret_hex))
    await server.start()
    bob = nostr_sdk.Keys.generate()
    keys = Keys(bytes.fromhex(bob.secret_key().to_hex()))
    url = server.base_url + "/test-push"
    try:
        async with httpx.AsyncClient() as client:

            def signed(age: int) -> dict[str, str]:  # distinct ids: each authorization is good for one request
                return {"authorization": build_authorization(keys, "POST", url, created_at=int(time.time()) - age)}

            nobody = await client.post(url, headers=signed(4))
            assert nobody.status_code == 404
            await register(server, bob, "bob-phone")
            await register(server, bob, "bob-tablet")
            reply = await client.post(url, headers=signed(3))
            assert reply.status_code == 200, reply.text
            results = {r["device_token"]: r for r in reply.json()["results"]}
            assert set(results) == {"bob-phone", "bob-tablet"}
            assert all(r["outcome"] == "delivered" and r["platform"] == "android" for r in results.values())
            assert len(server.pushes()) == 2 and all(p["kind"] == 0 for p in server.pushes())
            await client.post(url, headers=signed(2))
            limited = await client.post(url, headers=signed(1))
            assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    finally:
        await server.stop()
