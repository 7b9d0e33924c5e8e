"""Whole kinds instead of pubkey lists: a relay too small for the lists is asked for the kinds, and still every
event to a registered user is pushed and nothing else is.

The relay enforces strfry's limits (`tests.fakes.strict_relay`); the filters are made tiny
(`filter_chunk_size`, 8 KiB frames) so that a thousand registrations need more subscriptions than one connection
holds, which is what 20 000 users do on a real strfry.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import nostr_sdk
import pytest

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from tests.e2e.clients import dm, publish
from tests.fakes.strict_relay import StrictRelay
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
USERS = 1000


@pytest.mark.parametrize("mode", ["auto", "off"])
async def test_a_relay_the_lists_overflow_is_asked_for_the_kinds(tmp_path: Path, mode: str) -> None:
    relay = StrictRelay(max_message_length=8192, nip11={"limitation": {"max_message_length": 8192}})
    await relay.start()
    users = [nostr_sdk.Keys.generate() for _ in range(USERS)]
    server = RunningServer(
        make_settings(
            tmp_path,
            [relay.url],
            SERVER.secret_hex,
            nostr={"firehose": mode, "filter_chunk_size": 50},
            discovery={"enabled": False},  # its author filters are planned apart from the lists under test
        )
    )
    await server.start()
    try:
        for index, user in enumerate(users):
            pubkey = user.public_key().to_hex()
            await server.service.registry.add(Registration(pubkey, f"phone-{index}", Platform.ANDROID, "default"))
        pool = server.service.pool

        def settled() -> bool:
            """Every registration planned (the lists take two connections) and the relay holding the plan."""
            plan = pool.plan_for(relay.url)
            if plan is None or relay.held != plan.req_count:
                return False
            return plan.firehose if mode == "auto" else len(plan.lanes) == 2

        await wait_until(settled)
        plan = pool.plan_for(relay.url)
        assert plan is not None and plan.firehose is (mode == "auto")

        stranger = nostr_sdk.Keys.generate()
        sender = nostr_sdk.Keys.generate()
        for user in (users[0], users[-1], stranger):
            await publish(relay.url, dm(sender, user, "hello"))
        pushes = await server.wait_for_pushes(2)
        assert sorted(push["recipient"] for push in pushes) == sorted(
            user.public_key().to_hex() for user in (users[0], users[-1])
        )

        async with httpx.AsyncClient(base_url=server.base_url) as client:
            (status,) = (await client.get("/relays")).json()["relays"]
            metrics = (await client.get("/metrics")).text
        assert status["mode"] == ("firehose" if mode == "auto" else "pubkeys")
        reason = "subscriptions" if mode == "auto" else "configured"
        switches = 1 if mode == "auto" else 0  # the first registrations fit in lists
        assert (status["mode_reason"], status["mode_switches"], status["uncovered_pubkeys"]) == (reason, switches, 0)
        if mode == "off":
            assert status["firehose_events_per_second"] is None  # measured only while on the firehose
        label = status["relay"]
        assert f'pushstr_relay_firehose{{relay="{label}"}} {1.0 if mode == "auto" else 0.0}' in metrics
        assert f'pushstr_relay_mode_reason{{reason="{reason}",relay="{label}"}} 1.0' in metrics
        assert f'pushstr_relay_uncovered_pubkeys{{relay="{label}"}} 0.0' in metrics
        assert relay.counters.refused == 0
    finally:
        await server.stop()
        await relay.stop()
    assert len(server.pushes()) == 2  # the stranger's DM, delivered by the firehose too, matched nobody
