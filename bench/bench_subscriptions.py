"""Subscription churn: what one relay is sent while registrations trickle in.

1 000 registrations arrive one every 10 ms (as a busy instance sees them) into pushstr's registry; the relay pool
replans on every change, as the service wires it, with its production coalescing and update interval. The relay
is tests/fakes/strict_relay.py, which enforces strfry's limits (20 subscriptions per connection, 128 KiB frames)
and counts the REQ frames and the bytes it receives. When the last registration is in, an event to the first and
one to the last registered user must both arrive: the final plan reached the relay.

In the same run a fresh pool is given the whole final interest at once, against a fresh relay: what the same
plan costs when sent once. The ratio says how much the trickle costs on top.

    .venv/bin/python bench/bench_subscriptions.py [--registrations 1000] [--interval-ms 10] [--smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, grouped, write_report
from pushstr.config import NostrConfig
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from pushstr.registry.service import Registry
from pushstr.relays.planner import Interest
from pushstr.relays.pool import RelayPool
from pushstr.store import open_store
from tests.fakes.strict_relay import StrictRelay

COMMAND = ".venv/bin/python bench/bench_subscriptions.py"
SETTLE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Sent:
    """What one relay received from pushstr, by its own count."""

    req_frames: int
    bytes: int
    refused: int
    max_held: int
    close_frames: int
    seconds: float


class Arrivals:
    """The pool's event sink: wakes the waiter when an awaited event id comes in."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._changed = asyncio.Event()

    def __call__(self, event: dict[str, Any], url: str) -> None:
        self.ids.add(event["id"])
        self._changed.set()

    async def wait_for(self, wanted: set[str]) -> None:
        async with asyncio.timeout(SETTLE_TIMEOUT_S):
            while not wanted <= self.ids:
                self._changed.clear()
                await self._changed.wait()


async def _publish(url: str, *events: Event) -> None:
    """Store events on the relay (it forwards them to matching subscriptions) and wait for each OK."""
    async with connect(url) as ws:
        for event in events:
            await ws.send(orjson.dumps(["EVENT", event.to_dict()]).decode())
            while True:
                reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if reply[0] == "OK" and reply[1] == event.id:
                    if reply[2] is not True:
                        raise AssertionError(f"relay refused a probe event: {reply}")
                    break


def _interest(registry: Registry) -> Interest:
    return Interest(p=registry.interest(), e=registry.group_interest())


async def _probe(pool: RelayPool, arrivals: Arrivals, relay: StrictRelay, pubkeys: list[str]) -> None:
    """DMs to the first and the last registered user, published once the pool holds its plan; both must arrive."""
    url = relay.url
    await _wait(lambda: _settled(pool, url))
    author = Keys.generate()
    probes = [sign_event(author, 4, "probe", [["p", pubkey]]) for pubkey in (pubkeys[0], pubkeys[-1])]
    await _publish(url, *probes)
    await arrivals.wait_for({probe.id for probe in probes})


def _settled(pool: RelayPool, url: str) -> bool:
    """The relay holds every planned subscription of the current plan."""
    plan = pool.plan_for(url)
    statuses = [status for status in pool.status() if status.url == url]
    return plan is not None and bool(statuses) and statuses[0].subscriptions == plan.req_count > 0


async def _wait(condition: Any) -> None:
    """Poll a condition on the pool's own state (it has no event to await) until it holds."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the relay never held the whole plan")
        await asyncio.sleep(0.01)


def _sent(relay: StrictRelay, pool: RelayPool, seconds: float) -> Sent:
    counters = relay.counters
    closes = sum(status.closes_sent for status in pool.status())
    return Sent(counters.req_frames, counters.bytes_received, counters.refused, counters.max_held, closes, seconds)


async def trickle(count: int, interval: float, data_dir: Path) -> tuple[Sent, Sent, list[str], int]:
    """The trickle against one strict relay, then the same final interest sent at once against another."""
    store = open_store(f"sqlite:///{data_dir / 'subscriptions.sqlite3'}")
    await store.open()
    registry = Registry(store)
    pubkeys = [Keys.from_hex(f"{n + 1:064x}").public_hex for n in range(count)]
    relay = StrictRelay()
    await relay.start()
    arrivals = Arrivals()
    pool = RelayPool([relay.url], Keys.generate(), arrivals, NostrConfig(relays=[relay.url]))
    unsubscribe = registry.subscribe(lambda: pool.set_interest(_interest(registry)))
    try:
        await pool.start()
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        origin = loop.time()
        for index, pubkey in enumerate(pubkeys):
            await registry.add(Registration(pubkey, f"tok-{index}", Platform.IOS, "bench", persistent=False))
            await asyncio.sleep(max(0.0, origin + (index + 1) * interval - loop.time()))
        await _probe(pool, arrivals, relay, pubkeys)
        trickled = _sent(relay, pool, time.perf_counter() - started)
        plan = pool.plan_for(relay.url)
        connections = len(plan.lanes) if plan is not None else 0
    finally:
        unsubscribe()
        await pool.close()
        await relay.stop()

    once_relay = StrictRelay()
    await once_relay.start()
    once_arrivals = Arrivals()
    once_pool = RelayPool([once_relay.url], Keys.generate(), once_arrivals, NostrConfig(relays=[once_relay.url]))
    once_pool.set_interest(_interest(registry))
    try:
        started = time.perf_counter()
        await once_pool.start()
        await _probe(once_pool, once_arrivals, once_relay, pubkeys)
        once = _sent(once_relay, once_pool, time.perf_counter() - started)
    finally:
        await once_pool.close()
        await once_relay.stop()
        await store.close()
    return trickled, once, pubkeys, connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=1000)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, measures nothing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    count = 40 if args.smoke else args.registrations
    interval = args.interval_ms / 1000

    with tempfile.TemporaryDirectory() as tmp:
        trickled, once, _, connections = asyncio.run(trickle(count, interval, Path(tmp)))
    if trickled.refused or once.refused:
        raise AssertionError(f"the relay refused subscriptions: {trickled.refused} (trickle), {once.refused} (once)")
    ratio = trickled.bytes / once.bytes
    rows = [
        Row(
            what=(
                f"subscription churn: {grouped(count)} registrations one per {args.interval_ms:g} ms → "
                "REQ frames / bytes sent to one strfry-limited relay"
            ),
            figure=f"{grouped(trickled.req_frames)} REQs / {grouped(trickled.bytes)} bytes",
            limit=f"final plan sent once: {grouped(once.req_frames)} REQs / {grouped(once.bytes)} bytes",
            ratio=round(ratio, 3),
            target="-",
            met=None,
            command=COMMAND,
        )
    ]
    details = {
        "registrations": count,
        "interval_ms": args.interval_ms,
        "connections": connections,
        "trickle": {
            "req_frames": trickled.req_frames,
            "close_frames": trickled.close_frames,
            "bytes": trickled.bytes,
            "bytes_per_registration": round(trickled.bytes / count, 1),
            "max_subscriptions_held": trickled.max_held,
            "refused": trickled.refused,
            "seconds_to_final_plan": round(trickled.seconds, 2),
        },
        "once": {
            "req_frames": once.req_frames,
            "bytes": once.bytes,
            "max_subscriptions_held": once.max_held,
            "seconds_to_plan": round(once.seconds, 2),
        },
    }
    write_report(args.json, "subscriptions", rows, details)


if __name__ == "__main__":
    main()
