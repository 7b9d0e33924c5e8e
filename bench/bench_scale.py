"""Scale benchmark: pushstr with a million stored registrations.

Measures, on one generated SQLite database:
- cold start of the real server (`pushstr serve` in a subprocess) until `GET /ready` answers 200, and its RSS;
- the cost of matching one event (`match_event`) against an in-process registry of the same size;
- what the relay planner asks one relay for at 100 000 registrations and at the full size (REQs, filters,
  connections, bytes on the wire, time to plan).

The database is built through pushstr's own store (its migrations create the schema) and then bulk-filled with
stdlib sqlite3, so pushstr reads exactly what it would have written: a realistic mix of platforms, apps,
dialects, kind sets and a few multi-device pubkeys, shared tokens and group followers.

Run: .venv/bin/python bench/bench_scale.py [--smoke] [--json PATH] [--registrations N] [--planner-registrations M]
`--smoke` uses tiny sizes and finishes in seconds (the test suite runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import random
import re
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, grouped, write_report
from pushstr.config import NostrConfig
from pushstr.engine.match import match_event
from pushstr.nostr.event import Event
from pushstr.registry.service import Registry
from pushstr.relays.planner import Interest, Planner, asks_giftwrap
from pushstr.store import open_store
from pushstr.store.migrations import MIGRATIONS
from pushstr.store.rows import REGISTRATION_COLUMNS

SCRIPT = ".venv/bin/python bench/bench_scale.py"
READY_TARGET_S = 10.0
RSS_TARGET_BYTES = 1 << 30
POLL_INTERVAL_S = 0.02
READY_TIMEOUT_S = 180.0
MIB = 1 << 20

# Apps the generated rows name; the server's config declares each (log transport), as an operator would.
APPS_BY_PLATFORM = {
    "ios": (("damus", 6), ("default", 3), ("nos", 1)),
    "android": (("amethyst", 5), ("primal", 3), ("default", 2)),
    "unifiedpush": (("default", 1),),
    "webpush": (("web", 1),),
}
PLATFORMS = (("android", 55), ("ios", 35), ("unifiedpush", 6), ("webpush", 4))
ANDROID_SHARE = 0.55
# Kind sets as the store encodes them (sorted, comma-separated); the default set dominates.
KIND_SETS = (("1,4,1059,9735", 70), ("4,1059", 15), ("1059", 7), ("1,4,7,1059,9735", 5), ("1,4,6,7,1059,9735", 3))
DEVICES_PER_PUBKEY = ((1, 85), (2, 12), (3, 3))
PUSH_SETTINGS_SHARE = 0.15  # of all rows: 0xchat-style kind 22456 registrations (Android, "push-settings")
GROUP_FOLLOWER_SHARE = 0.05  # of those, the ones following groups
SHARED_TOKEN_SHARE = 0.002  # one phone, several accounts: the token of the previous pubkey again
GROUP_POOL = 5_000
GROUP_KINDS = "1,4,9,42,1059,9735"  # group followers also want group chat (9) and channel (42) messages


def _weighted(rng: random.Random, table: tuple[tuple[Any, int], ...], count: int) -> list[Any]:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights=weights, k=count)


def _random_hex(rng: random.Random, count: int) -> list[str]:
    """`count` random 64-hex strings (pubkeys, event ids), cut from one blob rather than built one by one."""
    blob = rng.randbytes(32 * count).hex()
    return [blob[index : index + 64] for index in range(0, 64 * count, 64)]


@dataclass(slots=True)
class Dataset:
    """What the generator wrote and what the match benchmark needs to address registered users."""

    path: Path
    registrations: int
    pubkeys: int
    sample_pubkeys: list[str]
    groups: list[str]
    seconds: float
    size_bytes: int
    counts: dict[str, int] = field(default_factory=dict)


def _rows(rng: random.Random, total: int, groups: list[str]) -> Iterator[tuple[Any, ...]]:
    """Registration rows in `REGISTRATION_COLUMNS` order, pubkey by pubkey, `total` in all."""
    devices = []
    left = total
    for count in _weighted(rng, DEVICES_PER_PUBKEY, total):
        if left <= 0:
            break
        devices.append(min(count, left))
        left -= devices[-1]
    # Sorted like the primary key, so the bulk insert appends to its B-tree instead of splitting pages at random.
    pubkeys = sorted(_random_hex(rng, len(devices)))
    platforms = _weighted(rng, PLATFORMS, total)
    kind_sets = _weighted(rng, KIND_SETS, total)
    apps = {name: _weighted(rng, table, 1024) for name, table in APPS_BY_PLATFORM.items()}
    b64 = base64.urlsafe_b64encode
    emitted = 0
    previous_token = "x"
    for pubkey, count in zip(pubkeys, devices, strict=True):
        for device in range(count):
            index = emitted
            emitted += 1
            platform = platforms[index]
            p_key = p_auth = device_pubkey = followed_groups = mode = None
            kinds = kind_sets[index]
            dialect = "http-nip98"
            app = apps[platform][index % 1024]
            if platform == "ios":
                token = rng.randbytes(32).hex()
            elif platform == "android":
                token = b64(rng.randbytes(16)).decode()[:22] + ":APA91b" + b64(rng.randbytes(105)).decode()
                if rng.random() < PUSH_SETTINGS_SHARE / ANDROID_SHARE:
                    dialect, app = "push-settings", "0xchat"
                    if rng.random() < GROUP_FOLLOWER_SHARE:
                        followed = rng.sample(groups, rng.randint(1, 3))
                        followed_groups = " ".join(followed)
                        kinds = GROUP_KINDS
            elif platform == "unifiedpush":
                token = f"https://ntfy.sh/up{b64(rng.randbytes(9)).decode()}?up=1"
            else:
                token = f"https://fcm.googleapis.com/fcm/send/{b64(rng.randbytes(120)).decode()}"
                p_key, p_auth = "B" + b64(rng.randbytes(65)).decode()[1:87], b64(rng.randbytes(16)).decode()[:22]
            roll = rng.random()
            if roll < SHARED_TOKEN_SHARE and device == 0 and platform != "webpush":
                token = previous_token
            elif roll < 0.1:
                mode = "alert"
            elif roll < 0.12:
                mode, device_pubkey = "encrypted", rng.randbytes(32).hex()
            previous_token = token
            created_at = 1_700_000_000.0 + rng.random() * 60_000_000
            yield (
                pubkey,
                token,
                platform,
                app,
                dialect,
                kinds,
                created_at,
                mode,
                p_key,
                p_auth,
                device_pubkey,
                followed_groups,
                None,  # authors
                None,  # relays
            )


async def _create_schema(url: str) -> None:
    store = open_store(url)
    await store.open()
    await store.close()


def build_database(path: Path, total: int, seed: int) -> Dataset:
    """Create the schema through pushstr's store, then bulk-insert `total` registrations in one transaction."""
    started = time.perf_counter()
    asyncio.run(_create_schema(f"sqlite+aiosqlite:///{path}"))
    rng = random.Random(seed)
    groups = _random_hex(rng, GROUP_POOL)
    columns = ", ".join(REGISTRATION_COLUMNS)
    marks = ", ".join("?" for _ in REGISTRATION_COLUMNS)
    # The store's secondary indexes on the table, as its migrations define them: dropped during the bulk insert
    # and rebuilt after it (one sorted build instead of a million random B-tree inserts), exactly as defined.
    indexes = [
        statement.strip()
        for step in MIGRATIONS
        for statement in step.statements
        if isinstance(statement, str) and re.match(r"\s*CREATE INDEX \w+ ON registrations\b", statement)
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    collecting = gc.isenabled()
    gc.disable()
    try:
        # No journal while filling a throwaway file; WAL (what the store uses) again afterwards.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        for statement in indexes:
            conn.execute(f"DROP INDEX {statement.split()[2]}")
        conn.executemany(f"INSERT INTO registrations ({columns}) VALUES ({marks})", _rows(rng, total, groups))
        for statement in indexes:
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
        (stored,) = conn.execute("SELECT count(*) FROM registrations").fetchone()
        (pubkeys,) = conn.execute("SELECT count(DISTINCT pubkey) FROM registrations").fetchone()
        counts = dict(conn.execute("SELECT platform, count(*) FROM registrations GROUP BY platform").fetchall())
        sample = [row[0] for row in conn.execute("SELECT pubkey FROM registrations ORDER BY random() LIMIT 10000")]
    finally:
        conn.close()
        if collecting:
            gc.enable()
    elapsed = time.perf_counter() - started
    return Dataset(path, stored, pubkeys, sample, groups, elapsed, path.stat().st_size, counts)


# --- cold start ---------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _toml_config(data_dir: Path, db: Path, port: int) -> str:
    """The server's config: no relays (no network), every app on the log transport."""
    apps = sorted({name for table in APPS_BY_PLATFORM.values() for name, _ in table} | {"0xchat"})
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"data_dir = {orjson.dumps(str(data_dir)).decode()}",
        "[nostr]",
        "relays = []",
        "[store]",
        f"url = {orjson.dumps(f'sqlite+aiosqlite:///{db}').decode()}",
        "[transports.log]",
        f"path = {orjson.dumps(str(data_dir / 'pushes.jsonl')).decode()}",
    ]
    for app in apps:
        lines += [f'[apps."{app}"]', 'transport = "log"']
    return "\n".join(lines) + "\n"


def _server_command() -> list[str]:
    script = Path(sys.executable).parent / "pushstr"
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "pushstr.cli", "serve"]


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, … of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, rest = line.partition(":")
        if name.startswith("Vm") and rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: unlike wall time, barely moved by other load on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")
# pushstr's own start-up log lines (uvicorn's carry no timestamp).
_MILESTONES = {
    "store_open": "store open:",
    "registry_loaded": "registry loaded",
    "service_started": "pushstr started",
}


def _milestones(log: str, spawned_at: float) -> dict[str, Any]:
    """Seconds from spawn to each start-up log line, and the registry's own load time."""
    found: dict[str, Any] = {}
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for name, text in _MILESTONES.items():
            if name not in found and match[2].startswith(text):
                found[name] = round(stamp - spawned_at, 3)
        loaded = re.search(r"registry loaded (\d+) registrations of (\d+) pubkeys in ([\d.]+)s", match[2])
        if loaded:
            found["registry_load_s"] = float(loaded[3])
            found["registry_loaded_count"] = int(loaded[1])
    if "registry_loaded" in found and "service_started" in found:
        # restoring dialect state, the first relay plan and starting delivery
        found["after_load_s"] = round(found["service_started"] - found["registry_loaded"], 3)
    return found


def cold_start(data_dir: Path, db: Path) -> dict[str, Any]:
    """Spawn `pushstr serve`, poll /ready every 20 ms, read its memory, stop it with SIGTERM."""
    port = _free_port()
    config = data_dir / "pushstr.toml"
    config.write_text(_toml_config(data_dir, db, port), encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("PUSHSTR_")}
    stderr_path = data_dir / "server.log"
    url = f"http://127.0.0.1:{port}/ready"
    with stderr_path.open("wb") as stderr, httpx.Client(timeout=5.0) as client:
        spawned_wall = time.time()
        spawned = time.perf_counter()
        proc = subprocess.Popen(
            [*_server_command(), "--config", str(config)],
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{stderr_path.read_text()[-3000:]}")
                if time.perf_counter() - spawned > READY_TIMEOUT_S:
                    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f} s")
                try:
                    if client.get(url).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(POLL_INTERVAL_S)
            ready = time.perf_counter() - spawned
            memory = _proc_status(proc.pid)
            cpu = _cpu_seconds(proc.pid)
        finally:
            stopping = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            stopped = time.perf_counter() - stopping
    log = stderr_path.read_text(encoding="utf-8", errors="replace")
    return {
        "ready_s": round(ready, 3),
        "cpu_s_at_ready": round(cpu, 2),
        "rss_bytes": memory.get("VmRSS", 0),
        "hwm_bytes": memory.get("VmHWM", 0),
        "stop_s": round(stopped, 3),
        "exit_code": code,
        "log_milestones_s": _milestones(log, spawned_wall),
    }


# --- match cost -------------------------------------------------------------------------------------------------


def _events(rng: random.Random, count: int, registered: list[str], groups: list[str]) -> list[Event]:
    """A realistic mix: gift wraps to registered and unregistered users, DMs, notes with a few p tags, reactions,
    zaps, channel messages naming a group."""
    strangers = _random_hex(rng, 4096)
    ids = _random_hex(rng, count)
    sig = "0" * 128

    def someone() -> str:
        return rng.choice(registered) if rng.random() < 0.3 else rng.choice(strangers)

    mix: tuple[tuple[str, int], ...] = (
        ("wrap_registered", 35),
        ("wrap_stranger", 15),
        ("note", 30),
        ("reaction", 8),
        ("dm", 5),
        ("zap", 5),
    )
    mix += (("channel", 2),)
    events = []
    for index, shape in enumerate(_weighted(rng, mix, count)):
        author = rng.choice(strangers)
        tags: list[list[str]]
        if shape == "wrap_registered":
            kind, author, tags = 1059, ids[count - 1 - index], [["p", rng.choice(registered)]]
        elif shape == "wrap_stranger":
            kind, author, tags = 1059, ids[count - 1 - index], [["p", rng.choice(strangers)]]
        elif shape == "note":
            kind = 1
            tags = [["e", rng.choice(strangers), "", "root"]]
            tags += [["p", someone()] for _ in range(rng.randint(1, 4))]
        elif shape == "reaction":
            kind, tags = 7, [["e", rng.choice(strangers)], ["p", someone()]]
        elif shape == "dm":
            kind, tags = 4, [["p", rng.choice(registered)]]
        elif shape == "zap":
            kind, tags = 9735, [["p", someone()], ["e", rng.choice(strangers)], ["bolt11", "lnbc10n1..."]]
        else:
            kind, tags = 42, [["e", rng.choice(groups), "", "root"], ["p", someone()]]
        events.append(Event(ids[index], author, 1_700_000_000 + index, kind, tags, "", sig))
    return events


def _best_time(work: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


async def _load_registry(url: str) -> tuple[Registry, float]:
    store = open_store(url)
    await store.open()
    registry = Registry(store)
    started = time.perf_counter()
    await registry.load()
    elapsed = time.perf_counter() - started
    await store.close()
    return registry, elapsed


def match_cost(dataset: Dataset, count: int, repeats: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the registry in-process (as the server does) and time `match_event` over `count` events; also the
    relay plan for this registry (`planner_figures`), while it is loaded."""
    rss_before = _proc_status(os.getpid()).get("VmRSS", 0)
    registry, load_s = asyncio.run(_load_registry(f"sqlite+aiosqlite:///{dataset.path}"))
    rss_loaded = _proc_status(os.getpid()).get("VmRSS", 0)
    events = _events(random.Random(seed), count, dataset.sample_pubkeys, dataset.groups)
    devices_for, devices_for_group = registry.devices_for, registry.devices_for_group
    matched = sum(len(match_event(event, devices_for, devices_for_group)) for event in events)

    def run() -> None:
        for event in events:
            match_event(event, devices_for, devices_for_group)

    def bare() -> None:
        """The floor: one registry lookup per p tag, nothing else."""
        for event in events:
            for tag in event.tags:
                if tag[0] == "p":
                    devices_for(tag[1])

    best = _best_time(run, repeats)
    floor = _best_time(bare, repeats)
    return {
        "events": count,
        "matches": matched,
        "us_per_event": best / count * 1e6,
        "events_per_s": count / best,
        "us_per_event_bare_p_lookups": floor / count * 1e6,
        "registry_load_in_process_s": round(load_s, 3),
        "registry_rss_in_process_bytes": rss_loaded - rss_before,
        "registrations_loaded": len(registry.registrations()),
    }, planner_figures(registry)


# --- planner ----------------------------------------------------------------------------------------------------


def planner_figures(registry: Registry) -> dict[str, Any]:
    """The plan one relay with strfry's default limits gets for this registry, with the server's own extra filter
    (kind 22456 to the server): REQs (subscriptions), filters, connections, bytes on the wire and time to plan."""
    config = NostrConfig()
    server_pubkey = "f" * 64
    interest = Interest(
        p=registry.interest(),
        e=registry.group_interest(),
        extra=({"kinds": [22456], "#p": [server_pubkey]},),
    )
    planner = Planner(config.filter_chunk_size)
    started = time.perf_counter()
    plan = planner.plan(interest)
    plan_s = time.perf_counter() - started
    now = int(time.time())
    sizes = []
    windows = {True: now - config.giftwrap_since_window_seconds, False: now - config.since_window_seconds}
    for sub_id, sub in plan.subscriptions.items():
        filters = [f if "since" in f else {**f, "since": windows[asks_giftwrap(f)]} for f in sub.filters]
        sizes.append(len(orjson.dumps(["REQ", sub_id, *filters])))
    values = sum(len(pubkeys) for pubkeys in interest.p.values())
    return {
        "registrations": len(registry.registrations()),
        "pubkeys": values,
        "kind_groups": len(interest.p),
        "group_ids": sum(len(ids) for ids in interest.e.values()),
        "reqs": plan.req_count,
        "filters": plan.filter_count,
        "connections": len(plan.lanes),
        "req_bytes_total": sum(sizes),
        "req_bytes_max": max(sizes, default=0),
        "req_bytes_median": int(statistics.median(sizes)) if sizes else 0,
        "chunk_size": config.filter_chunk_size,
        "plan_s": round(plan_s, 4),
    }


# --- report -----------------------------------------------------------------------------------------------------


def _size_label(count: int) -> str:
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count % 1000 == 0:
        return f"{count // 1000}k"
    return grouped(count)


def _command(argv: list[str]) -> str:
    """The command line that reproduces the figures (without where the report went)."""
    kept = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            kept.append(arg)
    return " ".join([SCRIPT, *map(shlex.quote, kept)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (for the test suite)")
    parser.add_argument("--json", type=Path, help="report path (default: bench/out/scale-<time>.json)")
    parser.add_argument("--registrations", type=int, help="registrations in the database (default 1 000 000)")
    parser.add_argument("--planner-registrations", type=int, help="registrations for the planner (default 100 000)")
    parser.add_argument("--events", type=int, help="events matched (default 100 000)")
    parser.add_argument("--starts", type=int, help="cold starts measured; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    total = args.registrations or (2_000 if args.smoke else 1_000_000)
    planned = args.planner_registrations or (1_000 if args.smoke else 100_000)
    event_count = args.events or (2_000 if args.smoke else 100_000)
    starts = args.starts or (1 if args.smoke else 3)
    repeats = 1 if args.smoke else 3

    with tempfile.TemporaryDirectory(prefix="pushstr-scale-") as tmp:
        data_dir = Path(tmp)
        dataset = build_database(data_dir / "pushstr.sqlite3", total, args.seed)
        print(
            f"generated {grouped(dataset.registrations)} registrations of {grouped(dataset.pubkeys)} pubkeys "
            f"in {dataset.seconds:.1f} s",
            flush=True,
        )
        runs = []
        for attempt in range(starts):
            run = cold_start(data_dir, dataset.path)
            runs.append(run)
            print(
                f"start {attempt + 1}: ready {run['ready_s']:.2f} s, RSS {run['rss_bytes'] / MIB:.0f} MiB, "
                f"VmHWM {run['hwm_bytes'] / MIB:.0f} MiB",
                flush=True,
            )
        matching, full_plan = match_cost(dataset, event_count, repeats, args.seed)
        print(f"match: {matching['us_per_event']:.2f} µs/event", flush=True)
        gc.collect()
        small = build_database(data_dir / "planner.sqlite3", planned, args.seed + 1)
        planning = planner_figures(asyncio.run(_load_registry(f"sqlite+aiosqlite:///{small.path}"))[0])

    ready = statistics.median(run["ready_s"] for run in runs)
    cpu = statistics.median(run["cpu_s_at_ready"] for run in runs)
    rss = statistics.median(run["rss_bytes"] for run in runs)
    hwm = max(run["hwm_bytes"] for run in runs)
    size = _size_label(total)
    command = _command(argv)
    rows = [
        Row(
            f"cold start to /ready ({size} registrations)",
            f"{ready:.2f} s (CPU {cpu:.2f} s)",
            "-",
            None,
            "≤ 10 s",
            ready <= READY_TARGET_S,
            command,
        ),
        Row(
            f"RSS after load ({size} registrations)",
            f"{rss / MIB:.0f} MiB (peak {hwm / MIB:.0f} MiB)",
            "-",
            None,
            "≤ 1 GiB",
            rss <= RSS_TARGET_BYTES,
            command,
        ),
        Row(
            f"match cost per event ({size} registered)",
            f"{matching['us_per_event']:.2f} µs ({grouped(matching['events_per_s'])} events/s)",
            "-",
            None,
            "-",
            None,
            command,
        ),
        *(
            Row(
                f"planner at {_size_label(figures['registrations'])} registrations: subscriptions / connections / "
                "bytes per relay, time to plan",
                f"{figures['reqs']} REQs / {figures['connections']} connections / "
                f"{figures['req_bytes_total'] / MIB:.1f} MiB, planned in {figures['plan_s']:.2f} s",
                "-",
                None,
                "-",
                None,
                command,
            )
            for figures in (planning, full_plan)
        ),
    ]
    details = {
        "registrations": dataset.registrations,
        "pubkeys": dataset.pubkeys,
        "platforms": dataset.counts,
        "generation_s": round(dataset.seconds, 2),
        "database_bytes": dataset.size_bytes,
        "cold_starts": runs,
        "ready_s_median": ready,
        "ready_s_min": min(run["ready_s"] for run in runs),
        "cpu_s_at_ready_median": cpu,
        "rss_bytes_median": rss,
        "hwm_bytes_max": hwm,
        "match": matching,
        "planner": planning,
        "planner_full_size": full_plan,
    }
    write_report(args.json, "scale", rows, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
