"""Firehose ingest: events/s when most of what relays send reaches nobody (match before verify).

A subscription by kind alone, without `#p`, hands pushstr every note a relay has: here 5% of the distinct
events mention a registered user and the rest are notes with no `p` tag or replies to strangers (with `e` tags,
which are looked up as groups). The feeder relay of bench_ingest.py streams them over two connections, with the
same share of cross-relay duplicates, into pushstr's relay pool, admission and matching; pushstr verifies only
the events that reach a device and drops the others unverified (counted as `unmatched`).

In the same run the raw consumer of bench_ingest.py reads the same feed and hashes and verifies every distinct
event, which is what admission cost before matching came first. Rounds alternate; each side's best round counts.

    .venv/bin/python bench/bench_firehose.py [--events 100000] [--rounds 3] [--smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_ingest import AUTHORS, Feed, Round, build_feed, load_registry, run_pushstr, run_raw
from bench.common import Row, grouped, write_report
from bench.feeder import Feeder
from pushstr.engine.admission import REJECTED
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys

COMMAND = ".venv/bin/python bench/bench_firehose.py"
TARGET_RATIO = 5.0
MATCHING_SHARE = 0.05
"""Share of the distinct events that mention a registered user."""


def _make_events(seed: int, count: int, registered: list[str], strangers: list[str]) -> list[tuple[bytes, int]]:
    """`count` signed kind-1 notes, every twentieth mentioning one registered user (a reply that also names a
    stranger); of the rest, half are top-level notes without `p` tags and half replies to one to three strangers.
    Runs in worker processes: signing dominates."""
    rng = random.Random(seed)
    authors = [Keys.from_hex(f"{2 * 10**12 + seed * AUTHORS + n:064x}") for n in range(AUTHORS)]
    now = int(time.time())
    every = round(1 / MATCHING_SHARE)
    filler = "gm, this is a firehose note with enough words to look like one. "
    out: list[tuple[bytes, int]] = []
    for index in range(count):
        author = authors[rng.randrange(AUTHORS)]
        content = f"note {seed}-{index} {filler * rng.randint(1, 4)}"
        thread = [["e", f"{rng.getrandbits(256):064x}", "", "root"]]
        if index % every == 0:
            tags = [*thread, ["p", rng.choice(registered)], ["p", rng.choice(strangers)]]
            reached = 1
        elif index % 2:
            tags = [["t", "nostr"], ["t", "bench"]]
            reached = 0
        else:
            tags = [*thread, *(["p", rng.choice(strangers)] for _ in range(rng.randint(1, 3)))]
            reached = 0
        note = sign_event(author, 1, content, tags, now - index % 600)
        out.append((note.to_json(), reached))
    return out


async def measure(feed: Feed, rounds: int) -> tuple[list[Round], list[Round], list[int]]:
    """Alternating rounds of the raw consumer and pushstr; also how many frames each pushstr round dropped
    unverified, checked against the feed (every frame of an event that reaches nobody, duplicates included)."""
    total = len(feed.a) + len(feed.b)
    with tempfile.TemporaryDirectory() as tmp, Feeder({"/a": feed.a, "/b": feed.b}) as feeder:
        urls = [feeder.url("/a"), feeder.url("/b")]
        registry = await load_registry(feed.registered, Path(tmp))
        ours: list[Round] = []
        raw: list[Round] = []
        dropped: list[int] = []
        for _ in range(rounds):
            raw.append(await run_raw(urls, total))
            before = REJECTED.value("unmatched")
            ours.append(await run_pushstr(urls, total, registry))
            dropped.append(REJECTED.value("unmatched") - before)
    registered = set(feed.registered)
    unmatched = sum(
        1
        for frame in (*feed.a, *feed.b)
        if not any(tag[0] == "p" and tag[1] in registered for tag in orjson.loads(frame)["tags"])
    )
    for result, unverified in zip(ours, dropped, strict=True):
        if result.admitted != feed.verified or result.notifications != feed.expected_notifications:
            raise AssertionError(
                f"pushstr verified {result.admitted}/{feed.verified} and notified "
                f"{result.notifications}/{feed.expected_notifications}"
            )
        if unverified != unmatched:
            raise AssertionError(f"pushstr dropped {unverified} frames unverified, expected {unmatched}")
    return ours, raw, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="frames over both connections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, measures nothing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    frames, rounds = (600, 1) if args.smoke else (args.events, args.rounds)

    started = time.perf_counter()
    feed = build_feed(frames, make=_make_events)
    generated = time.perf_counter() - started
    ours, raw, dropped = asyncio.run(measure(feed, rounds))
    best, ceiling = max(ours, key=lambda r: r.rate), max(raw, key=lambda r: r.rate)
    ratio = best.rate / ceiling.rate
    share = f"{MATCHING_SHARE:.0%}"
    rows = [
        Row(
            what=(
                f"firehose ingest: {grouped(len(feed.a) + len(feed.b))} frames over 2 relay connections, "
                f"{share} reaching a device → admission (match before verify) + matching"
            ),
            figure=f"{grouped(best.rate)} events/s",
            limit=f"consumer verifying every event: {grouped(ceiling.rate)}/s",
            ratio=round(ratio, 3),
            target=f"≥ {TARGET_RATIO:g}×",
            met=ratio >= TARGET_RATIO,
            command=COMMAND,
        )
    ]
    details = {
        "frames": len(feed.a) + len(feed.b),
        "distinct_events": feed.unique,
        "verified_events": feed.verified,
        "registered_users": len(feed.registered),
        "notifications_per_round": feed.expected_notifications,
        "dropped_unverified_per_round": dropped,
        "feed_generation_seconds": round(generated, 1),
        "pushstr_rates": [round(r.rate) for r in ours],
        "raw_rates": [round(r.rate) for r in raw],
        "pushstr_cpu_us_per_frame": [round(r.cpu_seconds / r.frames * 1e6, 2) for r in ours],
        "raw_cpu_us_per_frame": [round(r.cpu_seconds / r.frames * 1e6, 2) for r in raw],
    }
    write_report(args.json, "firehose", rows, details)


if __name__ == "__main__":
    main()
