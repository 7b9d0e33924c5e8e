"""Ingest: verified events per second from two relay connections through admission and matching.

A feeder relay in its own process streams N pre-signed frames over two connections: NIP-59 gift wraps to
registered and to unregistered users, kind-1 notes mentioning either, and a share of events sent on both
connections (cross-relay duplicates). pushstr reads them with its relay pool (the same `RelayConnection`s it
uses in production) into admission (dedupe, shape, age, id, BIP-340 signature) and matching against the
registry; matched notifications go to a counting sink, because delivery has a benchmark of its own.

In the same run the raw ceiling reads the same feed: a websockets + orjson + coincurve consumer doing only the
id hash and the signature check of every distinct event (skipping ids it already checked). pushstr matches
before it verifies, so it checks only the two thirds of this feed that reach a device; bench_firehose.py
measures that at firehose proportions. Rounds alternate between the two; each side's best round counts.

A third kind of round runs pushstr with the preferences stage, every registered device holding preferences that
need its user's lists (`follows_only`, `mute_list`) and every user a 1 000-entry kind 3 and a 1 000-entry kind
10000 (700 pubkeys, 100 threads, 100 hashtags, 100 words), read through the same kind handler the relays feed. The
follows name every author of the feed and no mute hits it, so the notifications are the same and the figure is the
stage's cost alone, beside the round without it.

    .venv/bin/python bench/bench_ingest.py [--events 50000] [--rounds 3] [--profile] [--smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
from coincurve import PublicKeyXOnly
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, grouped, write_report
from bench.feeder import Feeder
from pushstr.config import NostrConfig, parse_app
from pushstr.engine.admission import Admission, AdmissionLimits
from pushstr.engine.dedupe import SeenIds
from pushstr.engine.lists import CONTACTS, MUTE_LIST, UserLists
from pushstr.engine.pipeline import Pipeline
from pushstr.engine.policy import PolicyStage
from pushstr.nostr import nip59
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from pushstr.registry.preferences import PreferenceBook, Preferences
from pushstr.registry.service import Registry
from pushstr.relays.discovery import author_filters
from pushstr.relays.planner import Interest
from pushstr.relays.pool import RelayPool
from pushstr.store import open_store
from pushstr.transports.base import Notification

COMMAND = ".venv/bin/python bench/bench_ingest.py"
TARGET_RATE = 20_000
TARGET_RATIO = 0.85
TARGET_PREFERENCES_RATIO = 0.9
LIST_ENTRIES = 1_000
REGISTERED = 5_000
AUTHORS = 500
DUPLICATE_SHARE = 0.1
"""Share of the N frames that are a second copy of an event (the other connection carries the first)."""


@dataclass(frozen=True, slots=True)
class Feed:
    """The frames of both connections and what a correct consumer must make of them."""

    a: list[bytes]
    b: list[bytes]
    registered: list[str]
    unique: int
    verified: int
    """Distinct events that reach a device: the ones pushstr verifies (and remembers as seen)."""
    expected_notifications: int


def _make_events(seed: int, count: int, registered: list[str], strangers: list[str]) -> list[tuple[bytes, int]]:
    """`count` signed events (a third each: wraps to registered users, wraps to strangers, kind-1 mentions) with
    how many registered devices each must reach. Runs in worker processes: signing and wrapping dominate."""
    rng = random.Random(seed)
    authors = [Keys.from_hex(f"{10**12 + seed * AUTHORS + n:064x}") for n in range(AUTHORS)]
    now = int(time.time())
    filler = "gm, this is a benchmark note with enough words to look like one. "
    out: list[tuple[bytes, int]] = []
    for index in range(count):
        author = authors[rng.randrange(AUTHORS)]
        shape = index % 3
        if shape == 0:
            wrap = nip59.wrap(author, rng.choice(registered), 14, f"dm {seed}-{index} {filler}")
            out.append((wrap.to_json(), 1))
        elif shape == 1:
            wrap = nip59.wrap(author, rng.choice(strangers), 14, f"dm {seed}-{index} {filler}")
            out.append((wrap.to_json(), 0))
        else:
            mentioned = [rng.choice(registered), rng.choice(strangers)]
            tags = [["p", pubkey] for pubkey in mentioned] + [["t", "bench"]]
            note = sign_event(author, 1, f"note {seed}-{index} {filler * rng.randint(1, 4)}", tags, now - index % 600)
            out.append((note.to_json(), 1))
    return out


MakeEvents = Callable[[int, int, list[str], list[str]], list[tuple[bytes, int]]]
"""(seed, count, registered, strangers) → signed events as JSON, each with how many devices it must reach."""


def build_feed(frames: int, workers: int = 2, make: MakeEvents = _make_events) -> Feed:
    """N frames over two connections: (1 - DUPLICATE_SHARE)·N distinct events, DUPLICATE_SHARE·N of them on both.

    `make` runs in spawned worker processes, so it must be a module-level function."""
    registered = [Keys.from_hex(f"{n + 1:064x}").public_hex for n in range(REGISTERED)]
    strangers = [Keys.from_hex(f"{n + 10**9:064x}").public_hex for n in range(REGISTERED)]
    duplicates = int(frames * DUPLICATE_SHARE)
    unique = frames - duplicates
    chunk = -(-unique // workers)
    jobs = [(seed, min(chunk, unique - seed * chunk), registered, strangers) for seed in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        events = [event for part in pool.starmap(make, jobs) for event in part]
    rng = random.Random(7)
    rng.shuffle(events)
    half = (unique + duplicates) // 2
    a = [raw for raw, _ in events[:half]]
    b = [raw for raw, _ in events[half - duplicates :]]
    rng.shuffle(a)
    rng.shuffle(b)
    verified = sum(1 for _, reached in events if reached)
    return Feed(a, b, registered, unique, verified, sum(reached for _, reached in events))


class CountingSink:
    """Stands in for delivery: counts the notifications matching produced."""

    def __init__(self) -> None:
        self.notifications = 0

    def submit(self, notification: Notification, device: Registration) -> bool:
        self.notifications += 1
        return True


@dataclass(frozen=True, slots=True)
class Round:
    seconds: float
    cpu_seconds: float
    frames: int
    admitted: int
    notifications: int

    @property
    def rate(self) -> float:
        return self.frames / self.seconds


async def load_registry(registered: list[str], data_dir: Path) -> Registry:
    store = open_store(f"sqlite:///{data_dir / 'ingest.sqlite3'}")
    await store.open()
    registry = Registry(store)
    for pubkey in registered:
        await registry.add(Registration(pubkey, f"tok-{pubkey[:16]}", Platform.IOS, "bench", persistent=False))
    return registry


class MemoryPreferences:
    """The preference book's storage in a dict: the benchmark measures the event path, not the store."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], bytes] = {}

    async def save_preferences(self, pubkey: str, device_token: str, preferences: bytes) -> None:
        self.rows[(pubkey, device_token)] = preferences

    async def delete_preferences(self, pubkey: str, device_token: str) -> bool:
        return self.rows.pop((pubkey, device_token), None) is not None

    async def load_preferences(self) -> list[tuple[str, str, bytes]]:
        return [(pubkey, token, value) for (pubkey, token), value in self.rows.items()]


def feed_authors() -> list[str]:
    """The pubkeys `_make_events` signs with, in every worker."""
    return [Keys.from_hex(f"{10**12 + n:064x}").public_hex for n in range(2 * AUTHORS)]


async def load_preferences(registry: Registry, registered: list[str]) -> tuple[PreferenceBook, UserLists]:
    """Every device with `follows_only` and `mute_list`, every user with a 1 000-entry kind 3 and kind 10000."""
    book = PreferenceBook(MemoryPreferences())
    lists = UserLists(author_filters)
    wanted = Preferences(follows_only=True, mute_list=True)
    for pubkey in registered:
        for device in registry.devices_for(pubkey):
            await book.put(pubkey, device.device_token, wanted)
    lists.want(book.list_users)
    follows = [["p", pubkey] for pubkey in feed_authors()][:LIST_ENTRIES]
    rng = random.Random(11)
    mutes = [
        *(["p", f"{rng.getrandbits(256):064x}"] for _ in range(700)),
        *(["e", f"{rng.getrandbits(256):064x}"] for _ in range(100)),
        *(["t", f"muted-tag-{n}"] for n in range(100)),
        *(["word", f"mutedword{n}"] for n in range(100)),
    ]
    for pubkey in registered:
        for kind, tags in ((CONTACTS, follows), (MUTE_LIST, mutes)):
            lists.on_list(Event(f"{kind:064x}", pubkey, 1, kind, tags, "", "0" * 128))
    return book, lists


async def run_pushstr(
    urls: list[str],
    total: int,
    registry: Registry,
    profile: Any = None,
    lists: tuple[PreferenceBook, UserLists] | None = None,
) -> Round:
    """One round through a fresh pool, admission and pipeline (with `lists`, the preferences stage on them); timed
    from the first frame to the last event."""
    sink = CountingSink()
    admission = Admission(AdmissionLimits(64 * 1024, 3 * 24 * 3600), SeenIds(200_000))
    app = parse_app({"transport": "log"})

    class Handled:
        def record(self, event_id: str) -> None:
            return None

    pipeline = Pipeline(
        admission,
        registry.devices_for,
        sink,
        {"bench": app},
        Handled(),
        devices_for_group=registry.devices_for_group,
        preferences=None if lists is None else PolicyStage(lists[0], lists[1], registry.devices_for, sink.submit),
    )
    done = asyncio.Event()
    seen = 0
    first = first_cpu = 0.0
    ingest = pipeline.on_relay_event

    def on_event(obj: dict[str, Any], url: str) -> None:
        nonlocal seen, first, first_cpu
        if seen == 0:
            first, first_cpu = time.perf_counter(), time.process_time()
        ingest(obj, url)
        seen += 1
        if seen == total:
            done.set()

    keys = Keys.generate()
    pool = RelayPool(urls, keys, on_event, NostrConfig(relays=urls), coalesce_seconds=0)
    pool.set_interest(Interest(p=registry.interest(), e=registry.group_interest()))
    if profile is not None:
        profile.start()
    await pool.start()
    await asyncio.wait_for(done.wait(), 300)
    elapsed, cpu = time.perf_counter() - first, time.process_time() - first_cpu
    if profile is not None:
        profile.stop()
    await pool.close()
    return Round(elapsed, cpu, total, len(admission.seen), sink.notifications)


async def run_raw(urls: list[str], total: int) -> Round:
    """The ceiling: parse, id hash and signature check per distinct event, nothing else."""
    checked: set[str] = set()
    received = 0
    first = first_cpu = 0.0

    async def consume(url: str) -> None:
        nonlocal received, first, first_cpu
        async with connect(url) as ws:
            await ws.send(orjson.dumps(["REQ", "raw", {"kinds": [1, 1059]}]), text=True)
            while True:
                message = orjson.loads(await ws.recv(decode=False))
                if message[0] == "EOSE":
                    return
                if received == 0:
                    first, first_cpu = time.perf_counter(), time.process_time()
                received += 1
                event = message[2]
                if event["id"] in checked:
                    continue
                digest = sha256(
                    orjson.dumps(
                        [0, event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"]]
                    )
                ).digest()
                if digest.hex() != event["id"]:
                    raise AssertionError("feed event with a wrong id")
                if not PublicKeyXOnly(bytes.fromhex(event["pubkey"])).verify(bytes.fromhex(event["sig"]), digest):
                    raise AssertionError("feed event with a bad signature")
                checked.add(event["id"])

    await asyncio.gather(*(consume(url) for url in urls))
    elapsed, cpu = time.perf_counter() - first, time.process_time() - first_cpu
    if received != total:
        raise AssertionError(f"raw consumer received {received} of {total} frames")
    return Round(elapsed, cpu, total, len(checked), 0)


def _profiler() -> Any:
    try:
        from pyinstrument import Profiler
    except ImportError:
        sys.exit("--profile needs pyinstrument: .venv/bin/pip install pyinstrument")
    return Profiler(interval=0.0005)


async def measure(feed: Feed, rounds: int, profile: bool) -> tuple[list[Round], list[Round], list[Round], str | None]:
    total = len(feed.a) + len(feed.b)
    with tempfile.TemporaryDirectory() as tmp, Feeder({"/a": feed.a, "/b": feed.b}) as feeder:
        urls = [feeder.url("/a"), feeder.url("/b")]
        registry = await load_registry(feed.registered, Path(tmp))
        lists = await load_preferences(registry, feed.registered)
        ours: list[Round] = []
        raw: list[Round] = []
        preferring: list[Round] = []
        for _ in range(rounds):
            raw.append(await run_raw(urls, total))
            ours.append(await run_pushstr(urls, total, registry))
            preferring.append(await run_pushstr(urls, total, registry, lists=lists))
        report = None
        if profile:
            profiler = _profiler()
            await run_pushstr(urls, total, registry, profiler)
            report = profiler.output_text(unicode=True, color=False, show_all=False)
    for result in (*ours, *preferring):
        if result.admitted != feed.verified or result.notifications != feed.expected_notifications:
            raise AssertionError(
                f"pushstr admitted {result.admitted}/{feed.verified} and notified "
                f"{result.notifications}/{feed.expected_notifications}"
            )
    return ours, raw, preferring, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="frames over both connections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one more pushstr round (pyinstrument)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, measures nothing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    frames, rounds = (600, 1) if args.smoke else (args.events, args.rounds)

    started = time.perf_counter()
    feed = build_feed(frames)
    generated = time.perf_counter() - started
    ours, raw, preferring, profile = asyncio.run(measure(feed, rounds, args.profile))
    best, ceiling = max(ours, key=lambda r: r.rate), max(raw, key=lambda r: r.rate)
    ratio = best.rate / ceiling.rate
    with_lists = max(preferring, key=lambda r: r.rate)
    lists_ratio = with_lists.rate / best.rate
    rows = [
        Row(
            what=f"ingest: {grouped(len(feed.a) + len(feed.b))} frames over 2 relay connections → admission + matching",
            figure=f"{grouped(best.rate)} events/s",
            limit=f"websockets + orjson + coincurve consumer: {grouped(ceiling.rate)}/s",
            ratio=round(ratio, 3),
            target=f"≥ {grouped(TARGET_RATE)}/s and ≥ {TARGET_RATIO}×",
            met=best.rate >= TARGET_RATE and ratio >= TARGET_RATIO,
            command=COMMAND,
        ),
        Row(
            what=f"ingest with preferences: every device follows-only + mute list, {grouped(LIST_ENTRIES)} follows "
            f"and {grouped(LIST_ENTRIES)} mutes per user",
            figure=f"{grouped(with_lists.rate)} events/s",
            limit=f"without preferences, same run: {grouped(best.rate)}/s",
            ratio=round(lists_ratio, 3),
            target=f"≥ {TARGET_PREFERENCES_RATIO}×",
            met=lists_ratio >= TARGET_PREFERENCES_RATIO,
            command=COMMAND,
        ),
    ]
    details = {
        "frames": len(feed.a) + len(feed.b),
        "distinct_events": feed.unique,
        "verified_events": feed.verified,
        "duplicate_frames": len(feed.a) + len(feed.b) - feed.unique,
        "registered_users": len(feed.registered),
        "notifications_per_round": feed.expected_notifications,
        "feed_generation_seconds": round(generated, 1),
        "pushstr_rates": [round(r.rate) for r in ours],
        "raw_rates": [round(r.rate) for r in raw],
        "preferences_rates": [round(r.rate) for r in preferring],
        # CPU time of this process over the same span: the cost per frame, less disturbed by other processes.
        "pushstr_cpu_us_per_frame": [round(r.cpu_seconds / r.frames * 1e6, 2) for r in ours],
        "raw_cpu_us_per_frame": [round(r.cpu_seconds / r.frames * 1e6, 2) for r in raw],
        "preferences_cpu_us_per_frame": [round(r.cpu_seconds / r.frames * 1e6, 2) for r in preferring],
        "profile": profile,
    }
    if profile:
        print(profile)
    write_report(args.json, "ingest", rows, details)


if __name__ == "__main__":
    main()
