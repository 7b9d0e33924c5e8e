"""`server.workers`: one `pushstr serve` running two worker processes on one port and one PostgreSQL database.

Real parts throughout: the supervisor and its workers are subprocesses, the relay a LocalRelay, the provider the
fake APNs over HTTP/2 with TLS, registrations HTTP + NIP-98 through the shared port. Each worker's own `/metrics`
(`server.metrics_port` + k) shows what it holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
from prometheus_client.parser import text_string_to_metric_families

from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from tests.conftest import RelayHandle, free_port
from tests.e2e.clients import dm
from tests.e2e.durability_support import Config, Provider, Publisher, Pushstr, Recipient, recipients, wait_for
from tests.e2e.test_cluster import PUBLIC_URL, signed
from tests.fakes import make_apns_key
from tests.postgres import postgres_database, reset_schema

__all__ = ["postgres_database"]  # a fixture of these tests

SHARDS = 16


def two_free_ports() -> int:
    """A port p with p + 1 free too: worker 0's and worker 1's metrics."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two adjacent free ports")


def workers_of(supervisor: int) -> dict[int, int]:
    """worker index → pid, for the live children of the supervisor's process."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == supervisor and b"--worker-index" in command:
            found[int(command[command.index(b"--worker-index") + 1])] = int(entry.name)
    return found


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def held(metrics_port: int, index: int) -> int | None:
    """Shards worker `index` holds, from its own metrics port (None while it does not answer)."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            text = (await client.get(f"http://127.0.0.1:{metrics_port + index}/metrics")).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pushstr_cluster_shards_held":
                return int(sample.value)
    return None


async def split(metrics_port: int) -> list[int | None]:
    return [await held(metrics_port, index) for index in (0, 1)]


async def register(node: Pushstr, people: list[Recipient]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for person in people:
            npub = nip19.npub_encode(person.keys.public_key().to_hex())
            body = orjson.dumps({"npub": npub, "device_token": person.token, "platform": "ios"})
            headers = signed(person.keys, "POST", PUBLIC_URL + "/register", body)
            answer = await client.post(node.base_url + "/register", content=body, headers=headers)
            assert answer.status_code == 201, answer.text


async def test_two_workers_share_a_port_split_the_shards_and_one_killed_is_replaced(
    tmp_path: Path, local_relay: Callable[..., Awaitable[RelayHandle]], postgres_database: str
) -> None:
    await reset_schema(postgres_database)
    relay = await local_relay(notes_per_minute=60_000)
    key = make_apns_key(tmp_path)
    provider = Provider(key, tmp_path / "apns-tls", free_port())
    await provider.prepare()
    await provider.start()
    metrics_port = two_free_ports()
    extra = f"""
[store]
url = "{postgres_database}"

[cluster]
enabled = true
shards = {SHARDS}
lease_seconds = 3
poll_seconds = 0.5
"""
    config = Config(
        tmp_path / "data",
        free_port(),
        relay.url,
        Keys.generate().secret_hex,
        provider,
        key,
        extra=extra,
        update_interval=0.1,
        public_url=PUBLIC_URL,
        workers=2,
        metrics_port=metrics_port,
    )
    node = Pushstr(config, tmp_path, tmp_path / "pushstr.log")
    people = recipients(20)
    sender = nostr_sdk.Keys.generate()
    try:
        await node.start()
        assert node.process is not None
        supervisor = node.process.pid
        await wait_for(lambda: len(workers_of(supervisor)) == 2, 10, "two workers")

        async def settled() -> bool:
            counts = await split(metrics_port)
            return all(count is not None and count > 0 for count in counts) and sum(map(int, counts)) == SHARDS

        await until(settled, 20, "the shards split between the workers")
        await register(node, people)  # each request reaches whichever worker accepts it
        await deliver(relay.url, sender, people, provider, "first")

        before = workers_of(supervisor)
        killed = before[0]
        os.kill(killed, signal.SIGKILL)
        await wait_for(lambda: workers_of(supervisor).get(0) not in (None, killed), 15, "worker 0 restarted")
        assert workers_of(supervisor)[1] == before[1]
        await until(settled, 30, "the shards split again")
        await deliver(relay.url, sender, people, provider, "second")

        children = set(workers_of(supervisor).values())
        assert await node.terminate() == 0, node.tail()
        assert not any(map(running, children)), "a worker outlived the supervisor"
        assert "worker 0 exited with -9" in node.tail(200)
    finally:
        await node.cleanup()
        await provider.stop()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def deliver(relay_url: str, sender: Any, people: list[Recipient], provider: Provider, text: str) -> None:
    """A DM to each person; each device is pushed exactly once more."""
    before = provider.per_token()
    async with Publisher(relay_url) as publisher:
        for person in people:
            reply = await publisher.send(dm(sender, person.keys, text))
            assert reply[2] is True, reply
    await wait_for(
        lambda: all(provider.per_token()[person.token] == before[person.token] + 1 for person in people),
        20,
        f"every {text} DM pushed",
    )
