"""Relay → provider capacity and latency: the highest rate at which gift wraps written by a relay reach APNs as
pushes within 50 ms (p99), the latency at half that rate, and the CPU pushstr spends per pushed event.

Three processes, as in production: a feeder relay (`bench.feeder`) writes pre-signed NIP-59 gift wraps to
registered users at a fixed rate and notes the `time.perf_counter()` of each write; the real `pushstr.app.Service`
(SQLite store, one APNs app in `alert` mode, batching off) reads them, admits, matches and pushes them; the fake
APNs (HTTP/2 over TLS, provider JWT checked) notes the `time.perf_counter()` at which each push arrives and the
event id in its payload. perf_counter is CLOCK_MONOTONIC on Linux, one clock for all three processes, so
latency = arrival − write, per event, matched by event id. The first events of a run are a warm-up (TLS
handshake, the provider token, caches) and are left out of the figures.

The capacity is searched (doubling from 1 000/s until a rate misses, then halving the gap), with the outbox on
and off; it is reported beside the raw ingest consumer's rate on the same events in the same run, and the CPU per
pushed event beside one signature check measured here too (the two costs every push must pay at least).

    .venv/bin/python bench/bench_latency.py [--smoke] [--json PATH] [--rate R] [--events N] [--users N]

Prints the rows and writes bench/out/latency-<timestamp>.json (or PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from bench.common import Row, grouped, write_report  # noqa: E402
from bench.feeder import Feeder  # noqa: E402
from pushstr.nostr import nip59  # noqa: E402
from pushstr.nostr.keys import Keys  # noqa: E402
from pushstr.registry.model import Platform, Registration  # noqa: E402
from tests.fakes import APNS_TOPIC, make_apns_key  # noqa: E402
from tests.fakes.apns import ApnsRequest, FakeAPNs  # noqa: E402

if TYPE_CHECKING:
    from pushstr.config import Settings

APP = "phone"
TARGET_P50_MS = 5.0
TARGET_P99_MS = 50.0
#: Below this many events the wraps are made in this process; above it a process pool pays for its start-up.
POOL_THRESHOLD = 2000
#: How long after the last write every push must have arrived.
DRAIN_SECONDS = 15.0

# -- events ----------------------------------------------------------------------------------------------------


def _wrap_chunk(sender_hex: str, recipients: list[str], first: int) -> list[tuple[str, bytes]]:
    """Gift wraps from one sender, one per recipient: (event id, event JSON). Module level so a pool can run it."""
    sender = Keys.from_hex(sender_hex)
    out = []
    for offset, recipient in enumerate(recipients):
        event = nip59.wrap(sender, recipient, 14, f"message {first + offset}: are you awake?")
        out.append((event.id, event.to_json()))
    return out


def make_events(count: int, recipients: list[str]) -> list[tuple[str, bytes]]:
    """`count` gift wraps addressed round-robin to `recipients`; a two-process pool when there are many."""
    sender = Keys.generate().secret_hex
    targets = [recipients[i % len(recipients)] for i in range(count)]
    if count < POOL_THRESHOLD:
        return _wrap_chunk(sender, targets, 0)
    size = 1000
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        parts = [pool.submit(_wrap_chunk, sender, targets[i : i + size], i) for i in range(0, count, size)]
        return [item for part in parts for item in part.result()]


# -- the fake APNs in its own process ----------------------------------------------------------------------------


def _serve_apns(key: tuple[bytes, str, str], workdir: str, ready: Any, control: Any) -> None:
    """Child process: run the fake and note (event id, arrival) per push; hand them over when asked.

    `key` is the provider key's public PEM, key id and team id.
    """
    public_pem, key_id, team_id = key

    async def main() -> None:
        arrivals: list[tuple[str, float]] = []

        def note(request: ApnsRequest) -> None:
            arrivals.append((str(request.payload.get("event_id", "")), request.received_at))

        public = serialization.load_pem_public_key(public_pem)
        fake = FakeAPNs(public, key_id, team_id, Path(workdir), record=False, on_request=note)  # type: ignore[arg-type]
        await fake.start()
        # The fake stands in for Apple's servers: its own collector pauses (a full collection of its imports takes
        # tens of milliseconds) are not pushstr's latency. Its heap does not grow with cycles worth collecting.
        gc.freeze()
        gc.disable()
        ready.put((fake.url, str(fake.ca_file)))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, control.get)
            if command == "count":
                ready.put(len(arrivals))
            else:
                ready.put((arrivals, len(fake.tokens_seen)))
                break
        await fake.stop()

    asyncio.run(main())


class ApnsProcess:
    """Handle on the fake APNs child (`with ApnsProcess(...) as apns: apns.url, apns.count(), apns.arrivals()`)."""

    def __init__(self, workdir: Path) -> None:
        self.key = make_apns_key(workdir)
        public_pem = self.key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._control = context.Queue()
        self._process = context.Process(
            target=_serve_apns,
            args=((public_pem, self.key.key_id, self.key.team_id), str(workdir), self._ready, self._control),
            daemon=True,
        )
        self.url = ""
        self.ca_file = ""

    def __enter__(self) -> ApnsProcess:
        self._process.start()
        self.url, self.ca_file = self._ready.get(timeout=60)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._process.kill()
        self._process.join(5)

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def count(self) -> int:
        self._control.put("count")
        return int(self._ready.get(timeout=30))

    def arrivals(self) -> tuple[list[tuple[str, float]], int]:
        """Every push so far as (event id, perf_counter at arrival), and how many provider tokens were seen."""
        self._control.put("dump")
        arrivals, tokens = self._ready.get(timeout=60)
        return list(arrivals), int(tokens)


# -- pushstr -------------------------------------------------------------------------------------------------------


def make_settings(data_dir: Path, relay: str, apns: ApnsProcess, outbox: bool = True) -> Settings:
    """One APNs app in alert mode (the payload carries the event id), batching and coalescing off, no dialects;
    the outbox on (pending pushes stored) or off (in memory only)."""
    from pushstr.config import Settings

    app = {
        "transport": "apns",
        "base_url": apns.url,
        "ca_file": apns.ca_file,
        "key_file": str(apns.key.key_file),
        "key_id": apns.key.key_id,
        "team_id": apns.key.team_id,
        "topic": APNS_TOPIC,
        "mode": "alert",
        "batch_window_seconds": 0,
        "cooldown_seconds": 0,
        "queue_size": 100_000,
    }
    return Settings.model_validate(
        {
            "server": {"data_dir": str(data_dir), "port": 0},
            "nostr": {"relays": [relay], "secret_key": Keys.generate().secret_hex, "connect_timeout_seconds": 5},
            "transports": {"log": {"path": str(data_dir / "push.log")}},
            "apps": {APP: app},
            "platform_apps": dict.fromkeys(("ios", "android", "unifiedpush", "webpush"), APP),
            "dialects": {"mostro": {"enabled": False}, "push_settings": {"enabled": False}},
            "outbox": {"enabled": outbox},
        }
    )


async def register(settings: Settings, users: list[str]) -> None:
    """Store one iOS device per user before the service starts, as a restart would find them."""
    from pushstr.store import open_store

    store = open_store(settings.store_url)
    await store.open()
    now = time.time()
    try:
        for n, pubkey in enumerate(users):
            await store.save_registration(
                Registration(pubkey, f"{n:064x}", Platform.IOS, APP, kinds=frozenset({1059}), created_at=now)
            )
    finally:
        await store.close()


async def run_pushstr(
    settings: Settings, feeder: Feeder, apns: ApnsProcess, total: int, rate: float
) -> tuple[list[float], dict[str, float]]:
    """Run the service while the feeder paces the feed, until every push arrived (or time ran out).

    Returns the feeder's write times, each process's share of a core while the feed was paced, and what the
    service wrote to disk per push (`write_bytes` of /proc/self/io: the store, its WAL and anything else).
    """
    from pushstr.app import Service

    pids = {"pushstr": os.getpid(), "fake_apns": apns.pid}
    for child in multiprocessing.active_children():  # the feeder: the only other child
        if child.pid is not None and child.pid != apns.pid:
            pids["feeder"] = child.pid
    service = Service(settings)
    await service.start()
    written_before = _disk_bytes_written()
    rows_before = REGISTRY.get_sample_value("pushstr_outbox_row_writes_total") or 0.0
    try:
        loop = asyncio.get_running_loop()
        wall, before = time.perf_counter(), cpu_seconds(pids)
        _path, sent = await loop.run_in_executor(None, feeder.sent_times, total / rate + 60)
        wall, after = time.perf_counter() - wall, cpu_seconds(pids)
        load = {name: round((after[name] - before[name]) / wall, 2) for name in after if name in before}
        load["pushstr_cpu_seconds"] = round(after["pushstr"] - before["pushstr"], 3)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            if service.delivery.pending == 0 and await loop.run_in_executor(None, apns.count) >= total:
                break
            await asyncio.sleep(0.1)
    finally:
        await service.stop()
    load["disk_bytes_written_per_push"] = round((_disk_bytes_written() - written_before) / max(1, total), 1)
    rows_written = (REGISTRY.get_sample_value("pushstr_outbox_row_writes_total") or 0.0) - rows_before
    load["outbox_rows_written_per_push"] = round(rows_written / max(1, total), 3)
    return sent, load


def _disk_bytes_written() -> int:
    """Bytes this process caused to be written to storage so far (/proc/self/io `write_bytes`)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


# -- figures ---------------------------------------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (q in 0…100)."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(
    ids: list[str], sent: list[float], arrivals: list[tuple[str, float]], warmup: int
) -> tuple[dict[str, Any], list[float]]:
    """Latencies (ms) of the measured events, and the counts that say whether every event arrived once."""
    arrived: dict[str, float] = {}
    duplicates = 0
    for event_id, at in arrivals:
        if event_id in arrived:
            duplicates += 1
        else:
            arrived[event_id] = at
    measured = range(warmup, len(ids))
    latencies = [(arrived[ids[i]] - sent[i]) * 1000 for i in measured if ids[i] in arrived and i < len(sent)]
    ordered = sorted(latencies)
    counts = {
        "events": len(ids),
        "warmup": warmup,
        "measured": len(measured),
        "written_by_feeder": len(sent),
        "pushes_arrived": len(arrivals),
        "measured_delivered": len(latencies),
        "missing": len(ids) - len(arrived.keys() & set(ids)),
        "duplicates": duplicates,
        "unknown_ids": len(arrived.keys() - set(ids)),
    }
    return counts, ordered


def distribution(ordered: list[float]) -> dict[str, float]:
    points = (1, 10, 25, 50, 75, 90, 95, 99, 99.9)
    out = {f"p{q:g}": round(percentile(ordered, q), 3) for q in points}
    if ordered:
        out |= {"min": round(ordered[0], 3), "max": round(ordered[-1], 3), "mean": round(statistics.fmean(ordered), 3)}
    return out


def per_second(ids: list[str], sent: list[float], arrivals: list[tuple[str, float]], warmup: int) -> list[Any]:
    """p50 / p99 / max per second of writing: shows whether the tail is steady queueing or a few stalls."""
    arrived = dict(reversed(arrivals))
    start = sent[warmup] if len(sent) > warmup else 0.0
    buckets: dict[int, list[float]] = {}
    for i in range(warmup, min(len(ids), len(sent))):
        at = arrived.get(ids[i])
        if at is not None:
            buckets.setdefault(int(sent[i] - start), []).append((at - sent[i]) * 1000)
    rows = []
    for second in sorted(buckets):
        ordered = sorted(buckets[second])
        rows.append(
            {
                "second": second,
                "events": len(ordered),
                "p50": round(percentile(ordered, 50), 2),
                "p99": round(percentile(ordered, 99), 2),
                "max": round(ordered[-1], 2),
            }
        )
    return rows


def pacing(sent: list[float], warmup: int, rate: float) -> dict[str, float]:
    """How well the feeder kept its schedule (late writes add to the latency pushstr is charged with)."""
    measured = sent[warmup:]
    if len(measured) < 2:
        return {}
    span = measured[-1] - measured[0]
    start = sent[0]
    lateness = sorted((at - (start + i / rate)) * 1000 for i, at in enumerate(sent) if i >= warmup)
    return {
        "achieved_rate": round((len(measured) - 1) / span, 1) if span > 0 else 0.0,
        "seconds": round(span, 3),
        "write_lateness_ms_p50": round(percentile(lateness, 50), 3),
        "write_lateness_ms_p99": round(percentile(lateness, 99), 3),
        "write_lateness_ms_max": round(lateness[-1], 3),
    }


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each named process has used so far; 2 cores shared by three processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / ticks
    return out


# -- runs ------------------------------------------------------------------------------------------------------------

#: Where the capacity search starts, and how close its last passing and failing rates must come (as a fraction).
SEARCH_START = 1000.0
SEARCH_PRECISION = 0.15
SEARCH_STEPS = 8
#: Events per search run at least, and seconds of paced writing at least (the first quarter a warm-up).
SEARCH_EVENTS = 6000
SEARCH_SECONDS = 3.0
#: End-to-end CPU per pushed event may be this many raw signature verifications.
TARGET_CPU_VERIFIES = 3.0


def measure(
    wraps: list[tuple[str, bytes]], users: list[str], rate: float, *, outbox: bool
) -> tuple[list[float], list[tuple[str, float]], int, dict[str, float]]:
    """One paced run on a fresh data dir, fake APNs and feeder: write times, arrivals, tokens seen, load."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with ApnsProcess(workdir) as apns, Feeder({"/": [raw for _, raw in wraps]}, rate=rate) as feeder:
            settings = make_settings(workdir / "data", feeder.url("/"), apns, outbox=outbox)
            asyncio.run(register(settings, users))
            sent, load = asyncio.run(run_pushstr(settings, feeder, apns, len(wraps), rate))
            arrivals, tokens_seen = apns.arrivals()
    return sent, arrivals, tokens_seen, load


def _passes(wraps: list[tuple[str, bytes]], users: list[str], rate: float, outbox: bool) -> tuple[bool, dict[str, Any]]:
    """One search run at `rate`: every event pushed once with p99 within the target."""
    count = min(len(wraps), max(SEARCH_EVENTS, int(rate * SEARCH_SECONDS)))
    subset = wraps[:count]
    sent, arrivals, _tokens, load = measure(subset, users, rate, outbox=outbox)
    counts, ordered = summarize([event_id for event_id, _ in subset], sent, arrivals, count // 4)
    p99 = percentile(ordered, 99)
    fine = counts["missing"] == 0 and counts["duplicates"] == 0 and p99 <= TARGET_P99_MS
    state = "on" if outbox else "off"
    print(f"search: {grouped(rate)}/s outbox {state}: p99 {p99:.1f} ms ({'ok' if fine else 'over'})")
    return fine, {"rate": rate, "outbox": outbox, "events": count, "p99_ms": round(p99, 2), "ok": fine, **load}


def capacity(
    wraps: list[tuple[str, bytes]], users: list[str], *, outbox: bool, start: float, steps: int
) -> tuple[float, list[dict[str, Any]]]:
    """The highest paced rate whose p99 stays ≤ 50 ms: doubling from `start` until a rate fails, then halving the
    gap between the best pass and the first failure until they are within `SEARCH_PRECISION`."""
    passed, failed = 0.0, 0.0
    rate = start
    runs = []
    for _ in range(steps):
        fine, run = _passes(wraps, users, rate, outbox)
        runs.append(run)
        if fine:
            passed = rate
        else:
            failed = rate
        if failed and failed - passed <= SEARCH_PRECISION * failed:
            break
        rate = rate * 2 if not failed else round((passed + failed) / 2 / 50) * 50 or failed / 2
    return passed, runs


def raw_costs(wraps: list[tuple[str, bytes]]) -> dict[str, float]:
    """In this process, on these events: the raw ingest consumer's rate (websockets + orjson + one id hash and one
    signature check per event, bench_ingest's ceiling) and the CPU of one signature check alone."""
    from coincurve import PublicKeyXOnly

    from bench.bench_ingest import run_raw

    with Feeder({"/": [raw for _, raw in wraps]}) as feeder:
        consumed = asyncio.run(run_raw([feeder.url("/")], len(wraps)))
    checks = []
    for _, raw in wraps[:2000]:
        event = orjson.loads(raw)
        checks.append(
            (PublicKeyXOnly(bytes.fromhex(event["pubkey"])), bytes.fromhex(event["sig"]), bytes.fromhex(event["id"]))
        )
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for key, signature, digest in checks:
            key.verify(signature, digest)
        best = min(best, time.process_time() - started)
    return {"raw_consumer_rate": round(consumed.rate, 1), "verify_us": round(best / len(checks) * 1e6, 2)}


# -- main ------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (200 events, a two-step search)")
    parser.add_argument("--json", type=Path, default=None, help="report path (default bench/out/latency-*.json)")
    parser.add_argument(
        "--rate", type=float, default=None, help="paced rate of the latency run (default: half the capacity)"
    )
    parser.add_argument("--events", type=int, default=None, help="measured events (default 20000; smoke 200)")
    parser.add_argument("--users", type=int, default=None, help="registered users (default 1000; smoke 20)")
    args = parser.parse_args()
    events = args.events or (200 if args.smoke else 20_000)
    users_count = args.users or (20 if args.smoke else 1000)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.perf_counter()
    users = [Keys.generate().public_hex for _ in range(users_count)]
    wraps = make_events(events + (100 if args.smoke else 4000), users)
    generate_seconds = time.perf_counter() - started
    print(f"{len(wraps)} gift wraps to {users_count} users made in {generate_seconds:.1f}s")
    raw = raw_costs(wraps)
    print(f"raw consumer {grouped(raw['raw_consumer_rate'])} events/s; one signature check {raw['verify_us']} µs")

    start, steps = (250.0, 2) if args.smoke else (SEARCH_START, SEARCH_STEPS)
    best, searched = capacity(wraps, users, outbox=True, start=start, steps=steps)
    best_off, searched_off = capacity(wraps, users, outbox=False, start=start, steps=steps)
    rate = args.rate or max(best / 2, 100.0)
    warmup = max(20, int(rate / 4)) if args.smoke else max(200, int(rate / 2))
    run_wraps = wraps[: warmup + events]
    ids = [event_id for event_id, _ in run_wraps]

    sent, arrivals, tokens_seen, load = measure(run_wraps, users, rate, outbox=True)
    counts, ordered = summarize(ids, sent, arrivals, warmup)
    dist = distribution(ordered)
    complete = counts["missing"] == 0 and counts["measured_delivered"] == counts["measured"]
    p50, p90, p99, worst = (dist.get(key, float("nan")) for key in ("p50", "p90", "p99", "max"))
    cpu_us = load["pushstr_cpu_seconds"] / max(1, counts["written_by_feeder"]) * 1e6
    command = ".venv/bin/python bench/bench_latency.py" + (" --smoke" if args.smoke else "")
    figure = f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms"
    if not complete:
        figure += f" ({counts['missing']} of {counts['events']} events never arrived)"
    capacity_ratio = best / raw["raw_consumer_rate"]
    rows = [
        Row(
            what="capacity: highest paced rate with p99 relay → fake APNs ≤ 50 ms (gift wraps, outbox on)",
            figure=f"{grouped(best)} events/s",
            limit=f"raw ingest consumer: {grouped(raw['raw_consumer_rate'])}/s",
            ratio=capacity_ratio,
            target=f"≥ {1 / TARGET_CPU_VERIFIES:.2f}× raw",
            met=capacity_ratio >= 1 / TARGET_CPU_VERIFIES,
            command=command,
        ),
        Row(
            what=f"relay → provider latency at half the capacity, {grouped(rate)} events/s (p50 / p99)",
            figure=figure,
            limit="",
            ratio=None,
            target=f"p50 ≤ {TARGET_P50_MS:g} ms, p99 ≤ {TARGET_P99_MS:g} ms",
            met=complete and p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS,
            command=command,
        ),
        Row(
            what=f"CPU per pushed event at {grouped(rate)} events/s (relay frame → HTTP/2 response, pushstr's process)",
            figure=f"{cpu_us:.0f} µs",
            limit=f"one signature check: {raw['verify_us']:.0f} µs",
            ratio=cpu_us / raw["verify_us"],
            target=f"≤ {TARGET_CPU_VERIFIES:g}× a check",
            met=cpu_us <= TARGET_CPU_VERIFIES * raw["verify_us"],
            command=command,
        ),
        Row(
            what=f"cost of durability at {grouped(rate)} events/s: store writes per push (outbox on)",
            figure=f"{load['disk_bytes_written_per_push']:g} bytes to disk, "
            f"{load['outbox_rows_written_per_push']:g} outbox rows",
            limit="",
            ratio=None,
            target="-",
            met=None,
            command=command,
        ),
        Row(
            what="capacity with the outbox on (pending pushes stored) vs off",
            figure=f"{grouped(best)} events/s",
            limit=f"outbox off: {grouped(best_off)}/s",
            ratio=best / best_off if best_off else None,
            target="on ≥ 0.8× off",
            met=bool(best_off) and best / best_off >= 0.8,
            command=command,
        ),
    ]
    details = {
        "smoke": args.smoke,
        "rate": rate,
        "users": users_count,
        "raw": raw,
        "capacity_search": searched,
        "capacity_search_outbox_off": searched_off,
        "counts": counts,
        "complete": complete,
        "latency_ms": dist,
        "cpu_us_per_event": round(cpu_us, 1),
        "pacing": pacing(sent, warmup, rate),
        "per_second": per_second(ids, sent, arrivals, warmup),
        "provider_tokens_seen": tokens_seen,
        "cores_busy_while_paced": load,
        "generate_seconds": round(generate_seconds, 2),
    }
    print(
        f"sent {counts['written_by_feeder']}, pushes arrived {counts['pushes_arrived']} "
        f"({counts['missing']} missing, {counts['duplicates']} duplicates); measured {counts['measured_delivered']} "
        f"of {counts['measured']} after a warm-up of {warmup}"
    )
    write_report(args.json, "latency", rows, details)
    if not complete:
        sys.exit(f"not every event arrived: {counts}")


if __name__ == "__main__":
    main()
