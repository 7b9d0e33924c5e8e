"""Several `pushstr serve` processes on one real PostgreSQL: nothing lost when one is killed mid-stream, duplicates
within the stated bound, takeover within a lease, registrations through any instance, replays refused by all.

Everything is real and separate: the instances are subprocesses sharing a database of the test session's own, a
nostr-sdk LocalRelay carries the events (NIP-04 DMs built by nostr-sdk, one recipient each), devices register over
HTTP + NIP-98 through whichever instance, and the fake APNs (HTTP/2, TLS, JWT checked) records every push with the
event id its `alert` payload carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
import pytest

from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from tests.conftest import RelayHandle, free_port
from tests.e2e.clients import dm, publish
from tests.e2e.durability_support import (
    Config,
    Provider,
    Publisher,
    Pushstr,
    Recipient,
    new_token,
    recipients,
    wait_for,
)
from tests.fakes import make_apns_key
from tests.postgres import postgres_database, reset_schema

__all__ = ["postgres_database"]  # a fixture of these tests

SHARDS = 64
LEASE = 3.0
HELD = "pushstr_cluster_shards_held"
#: Every instance answers for the same public URL (behind one load balancer), so a NIP-98 token fits them all.
PUBLIC_URL = "http://push.test"


@dataclass
class Cluster:
    relay: RelayHandle
    provider: Provider
    nodes: list[Pushstr]


@pytest.fixture
async def make_cluster(
    tmp_path: Path, local_relay: Callable[..., Awaitable[RelayHandle]], postgres_database: str
) -> AsyncIterator[Callable[[int], Awaitable[Cluster]]]:
    """Factory: `await make_cluster(n)` starts a relay, the fake APNs and `n` instances on one emptied database."""
    await reset_schema(postgres_database)
    made: list[Cluster] = []

    async def make(count: int) -> Cluster:
        relay = await local_relay(notes_per_minute=60_000)
        key = make_apns_key(tmp_path)
        provider = Provider(key, tmp_path / "apns-tls", free_port())
        await provider.prepare()
        await provider.start()
        secret = Keys.generate().secret_hex
        extra = f"""
[store]
url = "{postgres_database}"

[cluster]
enabled = true
shards = {SHARDS}
lease_seconds = {LEASE}
poll_seconds = 0.5
"""
        nodes = []
        for n in range(count):
            workdir = tmp_path / f"node{n}"
            workdir.mkdir()
            config = Config(
                tmp_path / f"data{n}",
                free_port(),
                relay.url,
                secret,
                provider,
                key,
                extra=extra,
                update_interval=0.1,
                public_url=PUBLIC_URL,
            )
            nodes.append(Pushstr(config, workdir, tmp_path / f"node{n}.log"))
        cluster = Cluster(relay, provider, nodes)
        made.append(cluster)
        for node in nodes:
            await node.start()
        await converged(nodes)
        return cluster

    yield make
    for cluster in made:
        for node in cluster.nodes:
            await node.cleanup()
        await cluster.provider.stop()


async def push_outcomes(node: Pushstr) -> dict[str, float]:
    """What an instance's pushes and notifications came to (its counters since its last start), for a failure."""
    if not node.alive():
        return {}
    samples = await node.metrics()
    found: dict[str, float] = {}
    for name in ("pushstr_push_outcomes_total", "pushstr_notifications_total", "pushstr_push_dropped_total"):
        for labels, value in samples.get(name, []):
            if value:
                found[f"{name}{sorted(labels.values())}"] = value
    return found


def warnings(node: Pushstr) -> str:
    """Every warning an instance logged, for a failure message (the tail may not reach back to them)."""
    if not node.log_file.exists():
        return ""
    lines = node.log_file.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if " WARNING " in line or " ERROR " in line)


def shard_of(person: Recipient) -> int:
    return int(person.keys.public_key().to_hex()[:8], 16) % SHARDS


async def shards_held(nodes: list[Pushstr]) -> list[int]:
    return [int(await node.metric(HELD) or 0) for node in nodes]


async def converged(nodes: list[Pushstr], timeout: float = 4 * LEASE + 5) -> float:
    """Wait until the live `nodes` hold every shard between them, each its fair share; how long that took."""
    started = time.monotonic()
    share = SHARDS // len(nodes)
    deadline = started + timeout
    while True:
        held = await shards_held(nodes)
        if sum(held) == SHARDS and all(count >= share for count in held):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            tails = "\n".join(node.tail(15) for node in nodes)
            raise AssertionError(f"shards not split after {timeout:.0f} s: {held}\n{tails}")
        await asyncio.sleep(0.1)


async def register_through(nodes: list[Pushstr], people: list[Recipient]) -> None:
    """Person n registers an iOS device through instance n mod len(nodes), a few at a time."""
    async with httpx.AsyncClient(timeout=10) as client:

        async def one(node: Pushstr, person: Recipient) -> None:
            npub = nip19.npub_encode(person.keys.public_key().to_hex())
            body = orjson.dumps({"npub": npub, "device_token": person.token, "platform": "ios"})
            headers = signed(person.keys, "POST", PUBLIC_URL + "/register", body)
            answer = await client.post(node.base_url + "/register", content=body, headers=headers)
            assert answer.status_code == 201, answer.text

        for start in range(0, len(people), 10):
            await asyncio.gather(
                *(one(nodes[n % len(nodes)], person) for n, person in enumerate(people[start : start + 10], start))
            )


async def test_three_instances_one_killed_mid_stream_nothing_lost(
    make_cluster: Callable[[int], Awaitable[Cluster]],
) -> None:
    """3 instances, 300 users registered through all three, 3 000 DMs at a steady rate; instance 1 is killed with
    SIGKILL a third of the way in and restarted at two thirds. Every event is pushed; duplicates are at most the
    pushes answered in the second before the kill (what the dead instance may not have committed); the others
    hold all shards within a lease plus 5 s."""
    cluster = await make_cluster(3)
    nodes, provider = cluster.nodes, cluster.provider
    people = recipients(300)
    await register_through(nodes, people)
    sender = nostr_sdk.Keys.generate()
    events = [dm(sender, people[n % len(people)].keys, f"message {n}") for n in range(3000)]
    expected = {event.id().to_hex() for event in events}
    rate = 150.0
    takeover: list[float] = []
    killed_at = 0.0

    async def measure_takeover() -> None:
        takeover.append(await converged([nodes[0], nodes[2]], timeout=LEASE + 10))

    watcher: asyncio.Task[None] | None = None
    sent_at: list[float] = []
    async with Publisher(cluster.relay.url) as publisher:
        started = time.monotonic()
        for n, event in enumerate(events):
            sent_at.append(time.time())
            if n == 1000:
                await nodes[1].kill()
                killed_at = time.monotonic()
                watcher = asyncio.create_task(measure_takeover())
            elif n == 2000:
                await nodes[1].start()
            reply = await publisher.send(event)
            assert reply[2] is True, reply
            await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
    assert watcher is not None
    await watcher

    def missing() -> set[str]:
        return expected - {event_id for event_id in provider.per_event() if event_id is not None}

    try:
        await wait_for(lambda: not missing(), 60, "every event pushed")
    except AssertionError:
        lost = missing()
        what = "; ".join(
            f"#{n} sent {sent_at[n]:.3f} to shard {shard_of(people[n % len(people)])}"
            for n, event in enumerate(events)
            if event.id().to_hex() in lost
        )
        outcomes = [await push_outcomes(node) for node in nodes]
        tails = "\n".join(node.tail(20) + "\n" + warnings(node) for node in nodes)
        raise AssertionError(
            f"{len(lost)} of {len(expected)} events never pushed: {what}\noutcomes per instance {outcomes}\n{tails}"
        ) from None
    await wait_for(lambda: time.monotonic() - provider.last_answer_at() >= 2.0, 30, "a quiet provider")
    counts = provider.per_event()
    duplicates = sum(count - 1 for event_id, count in counts.items() if event_id in expected and count > 1)
    bound = sum(1 for answer in provider.delivered() if killed_at - 1.0 <= answer.received_at <= killed_at)
    print(f"cluster: {len(expected)} events, {duplicates} duplicates (bound {bound}), takeover {takeover[0]:.2f} s")
    assert duplicates <= bound, f"{duplicates} duplicate pushes, more than the {bound} answered in the last second"
    assert takeover[0] <= LEASE + 5, f"takeover took {takeover[0]:.1f} s"
    assert set(counts) - {None} <= expected, "pushes of events nobody published"


def signed(user: Any, method: str, url: str, body: bytes, created_at: int | None = None) -> dict[str, str]:
    """NIP-98 headers, made now or at `created_at`: equal requests need distinct times to get distinct ids (the
    id is what a replay is known by)."""
    secret = Keys(bytes.fromhex(user.secret_key().to_hex()))
    header = build_authorization(secret, method, url, body, int(time.time()) if created_at is None else created_at)
    return {"authorization": header, "content-type": "application/json"}


async def test_any_instance_registers_one_pushes_and_a_replay_is_refused_by_all(
    make_cluster: Callable[[int], Awaitable[Cluster]],
) -> None:
    """A registration through instance A gets its first push within a second, from whichever instance holds its
    shard; the NIP-98 token A accepted is refused by B; an unregister through B stops pushes on every instance."""
    cluster = await make_cluster(2)
    a, b = cluster.nodes
    provider = cluster.provider
    user, token = nostr_sdk.Keys.generate(), new_token()
    npub = nip19.npub_encode(user.public_key().to_hex())
    body = orjson.dumps({"npub": npub, "device_token": token, "platform": "ios"})
    header = signed(user, "POST", PUBLIC_URL + "/register", body)
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.post(a.base_url + "/register", content=body, headers=header)
        assert answer.status_code == 201, answer.text
        registered = time.monotonic()
        event = dm(nostr_sdk.Keys.generate(), user, "first")
        await publish(cluster.relay.url, event)
        await wait_for(lambda: provider.per_token()[token] == 1, 10, "the first push")
        first = next(x for x in provider.delivered() if x.device_token == token)
        assert first.received_at - registered <= 1.0, f"first push {first.received_at - registered:.2f} s after"

        # The token A accepted fits B too (one public URL); B reads the same used-token table.
        replayed = await client.post(b.base_url + "/register", content=body, headers=header)
        assert replayed.status_code == 401 and "replay" in replayed.json()["reason"], replayed.text

        gone = orjson.dumps({"device_token": token})
        removal = signed(user, "POST", PUBLIC_URL + "/unregister", gone)
        removed = await client.post(b.base_url + "/unregister", content=gone, headers=removal)
        assert removed.status_code == 200, removed.text

        # Back-dated from one fixed second, so no two listings share a created_at (and so an id) even when the
        # clock ticks between two of them.
        first_second = int(time.time())
        asked = itertools.count()

        async def nobody_has_it() -> bool:
            for node in (a, b):
                created_at = first_second - next(asked)
                listing = signed(user, "GET", PUBLIC_URL + "/registrations", b"", created_at=created_at)
                listed = await client.get(node.base_url + "/registrations", headers=listing)
                assert listed.status_code == 200, listed.text
                if listed.json()["registrations"]:
                    return False
            return True

        deadline = time.monotonic() + 5
        while not await nobody_has_it():
            assert time.monotonic() < deadline, "the unregister did not reach every instance"
            await asyncio.sleep(0.4)  # at most 26 listings in the 5 s: the oldest stays within NIP-98's 60 s
    await publish(cluster.relay.url, dm(nostr_sdk.Keys.generate(), user, "after"))
    quiet_from = time.monotonic()
    with contextlib.suppress(AssertionError):
        await wait_for(lambda: provider.per_token()[token] > 1, 3, "a push after the unregister")
    assert provider.per_token()[token] == 1, "pushed after the unregister"
    assert time.monotonic() - quiet_from >= 2.9
