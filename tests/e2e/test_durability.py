"""A matched push survives kill -9, SIGTERM and provider outages: at-least-once, and exactly once when nothing was
in flight at a kill.

Everything is real: pushstr is the `pushstr serve` subprocess (killed with SIGKILL or SIGTERM, restarted on the same
data dir and port), events are NIP-17 gift wraps built by nostr-sdk on a nostr-sdk LocalRelay (or sent to pushstr's
own relay endpoint), devices are registered over HTTP + NIP-98, and the provider is the fake APNs (HTTP/2, TLS, JWT
checked) on a fixed port, so it can be down (nothing listening), answer 503, and come back where pushstr expects
it. Each gift wrap goes to its own recipient with one device, so pushes per device token are pushes per event; the
apps run in `alert` mode, whose payload carries the event id, to check per-event counts and per-device order.

Exactly once is checked after the provider has been quiet for `QUIET_SECONDS` (longer than the longest retry
delay, 1 s here), so a duplicate would have shown up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nostr_sdk
import pytest

from pushstr.nostr.keys import Keys
from tests.conftest import RelayHandle, free_port
from tests.e2e.clients import gift_wrap, publish, register
from tests.e2e.durability_support import (
    Config,
    Provider,
    Publisher,
    Pushstr,
    Recipient,
    Timeout,
    recipients,
    summary,
    wait_for,
)
from tests.fakes import make_apns_key

#: Events per scenario: enough that a partial loss shows, few enough that the file stays well under two minutes.
N = 20
#: After the provider is back (or pushstr restarted), how long every push may take to arrive.
DELIVER_SECONDS = 20.0
#: No answer from the provider for this long means nothing else is coming (retry delays are at most 1 s).
QUIET_SECONDS = 2.0
MATCH_SECONDS = 20.0
MATCHED = "pushstr_events_matched_total"
PENDING = "pushstr_outbox_pending"


@dataclass
class Rig:
    relay: RelayHandle
    provider: Provider
    server: Pushstr
    sender: Any


@pytest.fixture
async def rig(tmp_path: Path, local_relay: Any) -> AsyncIterator[Rig]:
    """A relay, a provider that is down until a test starts it, and a pushstr that is not started yet."""
    relay = await local_relay()
    key = make_apns_key(tmp_path)
    provider = Provider(key, tmp_path / "apns-tls", free_port())
    await provider.prepare()
    config = Config(tmp_path / "data", free_port(), relay.url, Keys.generate().secret_hex, provider, key)
    workdir = tmp_path / "run"
    workdir.mkdir()
    server = Pushstr(config, workdir, tmp_path / "pushstr.log")
    try:
        yield Rig(relay, provider, server, nostr_sdk.Keys.generate())
    finally:
        await server.cleanup()
        await provider.stop()


async def register_all(server: Pushstr, people: list[Recipient]) -> None:
    """One iOS device per recipient, over HTTP + NIP-98 (a few at a time)."""
    for start in range(0, len(people), 10):
        batch = people[start : start + 10]
        await asyncio.gather(*(register(cast(Any, server), p.keys, p.token, platform="ios") for p in batch))


async def publish_all(rig: Rig, people: list[Recipient]) -> list[str]:
    """One gift wrap per recipient on the relay; their event ids."""
    ids = []
    for person in people:
        event = gift_wrap(rig.sender, person.keys, f"hello {person.token[:8]}")
        await publish(rig.relay.url, event)
        ids.append(event.id().to_hex())
    return ids


async def expect_pushes(rig: Rig, expected: Counter[str], when: str) -> None:
    """Every token in `expected` gets its count of pushes (200 answers) and, once the provider is quiet, no more."""
    provider, server = rig.provider, rig.server

    def failure(headline: str) -> str:
        return f"{headline} {when}: {summary(expected, provider.per_token())}\n{server.tail()}"

    try:
        await wait_for(
            lambda: all(provider.per_token()[token] >= count for token, count in expected.items()),
            DELIVER_SECONDS,
            "every push",
        )
    except Timeout as exc:
        raise AssertionError(failure(f"pushes missing ({exc})")) from None
    await wait_for(
        lambda: time.monotonic() - provider.last_answer_at() >= QUIET_SECONDS, DELIVER_SECONDS, "a quiet provider"
    )
    counts = provider.per_token()
    assert all(counts[token] == count for token, count in expected.items()), failure("duplicate pushes")
    assert set(counts) <= set(expected), failure("pushes to unknown tokens")


def at_least(threshold: float) -> Callable[[float], bool]:
    return lambda value: value >= threshold


def once_each(people: list[Recipient]) -> Counter[str]:
    return Counter({person.token: 1 for person in people})


async def test_sanity_provider_up_nothing_killed_each_push_once(rig: Rig) -> None:
    """The harness itself: with nothing going wrong every gift wrap is pushed exactly once (passes without an
    outbox too; if it fails, the other failures say nothing about durability)."""
    await rig.provider.start()
    await rig.server.start()
    people = recipients(N)
    await register_all(rig.server, people)
    await publish_all(rig, people)
    await expect_pushes(rig, once_each(people), "with the provider up all along")
    assert rig.server.alive(), rig.server.tail()


async def test_sigkill_while_provider_down_each_push_once_after_restart(rig: Rig) -> None:
    """Matched pushes that could not be sent (the provider is not listening) survive kill -9: after a restart with
    the provider back, each arrives exactly once (none was in flight at the kill, so no duplicate is allowed)."""
    await rig.server.start()
    people = recipients(N)
    await register_all(rig.server, people)
    await publish_all(rig, people)
    await rig.server.wait_metric(MATCHED, at_least(N), MATCH_SECONDS, f"{N} events matched")
    await rig.server.kill()
    assert not rig.provider.fake.answered, "the provider was down, yet answered requests"
    await rig.provider.start()
    await rig.server.start()
    await expect_pushes(rig, once_each(people), "after SIGKILL with the provider down and a restart")


async def test_sigterm_while_provider_down_exits_0_and_each_push_once_after_restart(rig: Rig) -> None:
    """The same with a graceful stop: exit status 0, and the pushes left pending are sent after the restart,
    exactly once."""
    await rig.server.start()
    people = recipients(N)
    await register_all(rig.server, people)
    await publish_all(rig, people)
    await rig.server.wait_metric(MATCHED, at_least(N), MATCH_SECONDS, f"{N} events matched")
    code = await rig.server.terminate()
    assert code == 0, f"pushstr exited with {code} after SIGTERM\n{rig.server.tail()}"
    await rig.provider.start()
    await rig.server.start()
    await expect_pushes(rig, once_each(people), "after SIGTERM with the provider down and a restart")


async def test_provider_503_for_20_seconds_then_200_each_push_once_in_order(rig: Rig) -> None:
    """A provider answering 503 to everything for ~20 s: every push is retried (no attempt limit: until its TTL)
    and delivered once it answers 200, exactly once per event, a device's pushes in the order of its events, and
    the outbox is empty afterwards (`pushstr_outbox_pending` 0)."""
    rig.provider.fail_everything(503, "ServiceUnavailable")
    await rig.provider.start()
    await rig.server.start()
    singles = recipients(N)
    several = recipients(1)[0]
    await register_all(rig.server, [*singles, several])
    outage_started = time.monotonic()
    single_ids = await publish_all(rig, singles)
    await rig.server.wait_metric(MATCHED, at_least(N), MATCH_SECONDS, f"{N} events matched")
    ordered_ids = []
    for index in range(3):
        # Each is published once the previous one has matched, so pushstr saw them in this order.
        event = gift_wrap(rig.sender, several.keys, f"message {index}")
        await publish(rig.relay.url, event)
        ordered_ids.append(event.id().to_hex())
        await rig.server.wait_metric(MATCHED, at_least(N + index + 1), MATCH_SECONDS, f"event {index}")
    # The outage is the scenario: it lasts a fixed wall time, during which pushstr must keep retrying.
    await asyncio.sleep(max(0.0, outage_started + 20.0 - time.monotonic()))
    refused = len(rig.provider.fake.answered)
    assert refused >= N + 3, f"only {refused} attempts reached the failing provider\n{rig.server.tail()}"
    assert not rig.provider.delivered()
    rig.provider.succeed()

    expected = once_each(singles)
    expected[several.token] = 3
    await expect_pushes(rig, expected, "after 20 s of 503")
    per_event = rig.provider.per_event()
    wrong = {event_id[:12]: per_event[event_id] for event_id in [*single_ids, *ordered_ids] if per_event[event_id] != 1}
    assert not wrong, f"events not pushed exactly once: {wrong}\n{rig.server.tail()}"
    arrived = [answer.event_id for answer in rig.provider.delivered() if answer.device_token == several.token]
    assert arrived == ordered_ids, f"per-device order lost: sent {ordered_ids}, arrived {arrived}"

    pending = await rig.server.metric(PENDING)
    assert pending is not None, f"the outbox depth gauge {PENDING} (label app) is absent from /metrics"
    await rig.server.wait_metric(PENDING, lambda v: v == 0, 10.0, f"{PENDING} at 0")


async def test_event_from_builtin_endpoint_sigkill_while_provider_down_pushed_once_after_restart(rig: Rig) -> None:
    """An event that only pushstr's own relay endpoint received (no relay can replay it): once its `OK` came,
    kill -9 with the provider down must not lose it; after the restart it is pushed exactly once."""
    await rig.server.start()
    people = recipients(5)
    await register_all(rig.server, people)
    async with Publisher(rig.server.ws_url) as endpoint:
        for person in people:
            reply = await endpoint.send(gift_wrap(rig.sender, person.keys, "only here"))
            assert reply[2] is True, reply
    await rig.server.kill()  # right after the last OK: an OK must mean the push is stored
    await rig.provider.start()
    await rig.server.start()
    await expect_pushes(rig, once_each(people), "after endpoint events, SIGKILL with the provider down and a restart")


@pytest.mark.timeout(90)
async def test_slow_long_outage_under_steady_stream_all_delivered_once(rig: Rig) -> None:
    """Slow (~40 s). The provider is unreachable for ~30 s while an event arrives every 0.2 s; when it is back,
    every push is delivered and none twice."""
    await rig.server.start()
    count = 150
    people = recipients(count)
    await register_all(rig.server, people)
    started = time.monotonic()
    for index, person in enumerate(people):
        # A connection per event, as separate clients would: the relay rate-limits each connection to 60/min.
        await asyncio.sleep(max(0.0, started + index * 0.2 - time.monotonic()))
        await publish(rig.relay.url, gift_wrap(rig.sender, person.keys, f"tick {index}"))
    await rig.server.wait_metric(MATCHED, at_least(count), MATCH_SECONDS, f"{count} events matched")
    assert time.monotonic() - started >= 29
    await rig.provider.start()
    await expect_pushes(rig, once_each(people), "after a 30 s outage under a steady stream")
