"""Several instances on one PostgreSQL: pushes per second with 1, 2 and 3 `pushstr serve` processes on this machine,
and with one `pushstr serve` of 2 workers (`server.workers`: the same cluster members behind one port).

Every part is a process of its own, as in production: N pushstr instances (cluster on, one PostgreSQL database,
outbox on), a relay that sends each connection only the events its subscriptions ask for (`#p`), as a real relay
does, and the fake APNs (HTTP/2 over TLS, provider JWT checked). Users are stored before the instances start; once
the instances hold every shard between them and the relay sees each user subscribed by exactly one of them, the
relay writes the whole feed (gift wraps, one recipient each) at once, and the figure is events ÷ (last push's
arrival − the write). REQ frames each instance sent to the relay are read from its /metrics.

On a 2-core machine the instances, the relay, the fake APNs and PostgreSQL share two cores: more instances cannot
make more CPU, so this measures what splitting costs (each instance pays its own relay session, its share of
database round trips and its lease work) rather than a speed-up; the report says how busy each process was.

    .venv/bin/python bench/bench_cluster.py [--smoke] [--json PATH] [--events N] [--users N] [--instances 1,2,3]
        [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from websockets.asyncio.server import ServerConnection, serve  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bench.bench_latency import ApnsProcess, cpu_seconds, make_events  # noqa: E402
from bench.common import Row, grouped, write_report  # noqa: E402
from bench.feeder import text_frame  # noqa: E402
from pushstr.nostr.keys import Keys  # noqa: E402
from pushstr.registry.model import Platform, Registration  # noqa: E402
from tests.fakes import APNS_TOPIC  # noqa: E402

POSTGRES_URL = os.environ.get("PUSHSTR_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
PUSHSTR_BIN = Path(sys.executable).with_name("pushstr")
APP = "phone"
SHARDS = 64
LEASE_SECONDS = 3.0
COMMAND = ".venv/bin/python bench/bench_cluster.py"
#: How long the instances may take to split the shards and subscribe them, and the pushes to arrive.
SETTLE_SECONDS = 60.0
DRAIN_SECONDS = 120.0

# -- the relay ---------------------------------------------------------------------------------------------------


class _GatedRelay:
    """Answers every REQ with EOSE at once and remembers each connection's live `#p` subscriptions; on `go`, writes
    to each connection the feed's events whose recipient one of its subscriptions names, under that subscription."""

    def __init__(self, feed: list[tuple[str, bytes]]) -> None:
        self._feed = feed
        self._recipients = {recipient for recipient, _ in feed}
        self._connections: dict[ServerConnection, dict[str, set[str]]] = {}

    async def handle(self, ws: ServerConnection) -> None:
        subscriptions: dict[str, set[str]] = {}
        self._connections[ws] = subscriptions
        try:
            async for message in ws:
                request = orjson.loads(message)
                if not isinstance(request, list) or len(request) < 2:
                    continue
                if request[0] == "REQ":
                    wanted: set[str] = set()
                    for query in request[2:]:
                        if isinstance(query, dict):
                            wanted.update(query.get("#p", ()))
                    subscriptions[request[1]] = wanted
                    await ws.send(orjson.dumps(["EOSE", request[1]]), text=True)
                elif request[0] == "CLOSE":
                    subscriptions.pop(request[1], None)
        except ConnectionClosed:
            pass
        finally:
            self._connections.pop(ws, None)

    def coverage(self) -> tuple[int, int]:
        """(recipients subscribed by some connection, subscriptions summed over connections): equal when no
        recipient is asked for by two instances. Only the feed's recipients count: every instance also asks for
        events to the server key (registration dialects), which are not split."""
        recipients = self._recipients
        per_connection = [
            set().union(*subs.values()) & recipients if subs else set() for subs in self._connections.values()
        ]
        return len(set().union(*per_connection)) if per_connection else 0, sum(map(len, per_connection))

    def go(self) -> tuple[float, int]:
        """Write the feed; (perf_counter of the write, events written)."""
        written = 0
        at = time.perf_counter()
        for ws, subscriptions in list(self._connections.items()):
            owner = {pubkey: sub_id for sub_id, pubkeys in subscriptions.items() for pubkey in pubkeys}
            prefixes: dict[str, bytes] = {}
            frames = []
            for recipient, raw in self._feed:
                sub_id = owner.get(recipient)
                if sub_id is None:
                    continue
                prefix = prefixes.get(sub_id) or prefixes.setdefault(sub_id, b'["EVENT",' + orjson.dumps(sub_id) + b",")
                frames.append(text_frame(prefix + raw + b"]"))
            ws.transport.write(b"".join(frames))
            written += len(frames)
        return at, written


def _serve_relay(feed_file: str, ready: Any, control: Any) -> None:
    feed: list[tuple[str, bytes]] = orjson.loads(Path(feed_file).read_bytes())
    feed = [(recipient, raw.encode()) for recipient, raw in feed]  # type: ignore[attr-defined]

    async def main() -> None:
        relay = _GatedRelay(feed)
        async with serve(relay.handle, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=1 << 20) as srv:
            ready.put(next(iter(srv.sockets)).getsockname()[1])
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, control.get)
                ready.put(relay.coverage() if command == "coverage" else relay.go())

    asyncio.run(main())


class RelayProcess:
    """Handle on the gated relay child (`with RelayProcess(feed) as relay: relay.url, relay.coverage(), relay.go()`)."""

    def __init__(self, feed: list[tuple[str, bytes]], workdir: Path) -> None:
        feed_file = workdir / "feed.json"
        feed_file.write_bytes(orjson.dumps([(recipient, raw.decode()) for recipient, raw in feed]))
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._control = context.Queue()
        self._process = context.Process(
            target=_serve_relay, args=(str(feed_file), self._ready, self._control), daemon=True
        )
        self.url = ""

    def __enter__(self) -> RelayProcess:
        self._process.start()
        self.url = f"ws://127.0.0.1:{self._ready.get(timeout=60)}/"
        return self

    def __exit__(self, *_exc: object) -> None:
        self._process.kill()
        self._process.join(5)

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def coverage(self) -> tuple[int, int]:
        self._control.put("coverage")
        covered, total = self._ready.get(timeout=30)
        return int(covered), int(total)

    def go(self) -> tuple[float, int]:
        self._control.put("go")
        at, written = self._ready.get(timeout=60)
        return float(at), int(written)


# -- PostgreSQL and the instances ----------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_run(length: int) -> int:
    """A port p such that p … p + length - 1 are all free (the workers' metrics ports)."""
    for _ in range(100):
        first = free_port()
        with contextlib.ExitStack() as probes:
            try:
                for port in range(first + 1, first + length):
                    probes.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no {length} adjacent free ports")


def instance_toml(  # noqa: PLR0917 - one value per line of the file
    n: int,
    port: int,
    workdir: Path,
    store_url: str,
    relay: str,
    apns: ApnsProcess,
    secret: str,
    workers: int = 1,
    metrics_port: int | None = None,
) -> Path:
    """Instance `n`'s configuration: one APNs app in alert mode (the payload names the event), no dialects;
    `workers` processes behind its port, worker k's metrics at `metrics_port` + k."""
    path = workdir / f"node{n}.toml"
    disabled = "".join(f"\n[dialects.{name}]\nenabled = false\n" for name in ("mostro", "push_settings", "marmot"))
    path.write_text(
        f"""
[server]
data_dir = "{workdir / f"data{n}"}"
port = {port}
workers = {workers}
{f"metrics_port = {metrics_port}" if metrics_port else ""}

[store]
url = "{store_url}"

[nostr]
relays = ["{relay}"]
secret_key = "{secret}"
connect_timeout_seconds = 5
relay_update_interval_seconds = 0.2

[cluster]
enabled = true
instance_id = "bench-{n}"
shards = {SHARDS}
lease_seconds = {LEASE_SECONDS}
poll_seconds = 0.5

[platform_apps]
ios = "{APP}"
android = "{APP}"
unifiedpush = "{APP}"
webpush = "{APP}"

[apps.{APP}]
transport = "apns"
base_url = "{apns.url}"
ca_file = "{apns.ca_file}"
key_file = "{apns.key.key_file}"
key_id = "{apns.key.key_id}"
team_id = "{apns.key.team_id}"
topic = "{APNS_TOPIC}"
mode = "alert"
batch_window_seconds = 0
cooldown_seconds = 0
queue_size = 100000
{disabled}""",
        encoding="utf-8",
    )
    return path


class Instance:
    """`pushstr serve --config FILE` as a child process, listening on `port`; with workers, their own metrics
    at `metrics_ports`."""

    def __init__(self, config: Path, port: int, log: Path, metrics_ports: list[int] | None = None) -> None:
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"
        self.metrics_urls = [f"http://127.0.0.1:{p}" for p in metrics_ports] if metrics_ports else [self.base_url]
        with log.open("wb") as out:
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
            self.process = subprocess.Popen(
                [str(PUSHSTR_BIN), "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=config.parent,
            )

    async def ready(self, client: httpx.AsyncClient) -> None:
        """Wait until `/ready` answers 200."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"instance exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(self.base_url + "/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"instance not ready:\n{self.tail()}")

    async def metrics(
        self, client: httpx.AsyncClient, url: str | None = None
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The samples of `/metrics` at `url` (one worker's), else at the instance's port."""
        text = (await client.get((url or self.base_url) + "/metrics")).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def pids(self, name: str) -> dict[str, int]:
        """The processes doing the work: the instance itself, or its workers (the supervisor only waits)."""
        workers = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rpartition(")")[2].split()[1]) == self.process.pid:
                        workers[f"{name}-w{len(workers)}"] = int(entry.name)
        return workers or {name: self.process.pid}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (sample, sample_labels), v in samples.items() if sample == name and wanted <= set(sample_labels))


async def store_users(store_url: str, users: list[str]) -> None:
    """One iOS device per user, stored before any instance starts (as a restart finds them)."""
    from pushstr.store import open_store

    store = open_store(store_url)
    await store.open()
    now = time.time()
    try:
        for n, pubkey in enumerate(users):
            await store.save_registration(
                Registration(pubkey, f"{n:064x}", Platform.IOS, APP, kinds=frozenset({1059}), created_at=now)
            )
    finally:
        await store.close()


def _await_pushes(apns: ApnsProcess, total: int) -> None:
    """Block until the fake APNs has `total` pushes or the drain time is over (the figures then say what is missing)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while apns.count() < total and time.monotonic() < deadline:
        time.sleep(0.05)


# -- one run ------------------------------------------------------------------------------------------------------


async def _settle(instances: list[Instance], relay: RelayProcess, users: int, client: httpx.AsyncClient) -> float:
    """Wait until the instances hold every shard and the relay sees every user subscribed exactly once."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    held: list[float] = []
    covered = total = 0
    while time.monotonic() - started < SETTLE_SECONDS:
        try:
            held = [
                value(await node.metrics(client, url), "pushstr_cluster_shards_held")
                for node in instances
                for url in node.metrics_urls
            ]
        except httpx.HTTPError:  # a worker still starting
            await asyncio.sleep(0.2)
            continue
        covered, total = await loop.run_in_executor(None, relay.coverage)
        if sum(held) == SHARDS and min(held) >= SHARDS // len(held) and covered == total == users:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise RuntimeError(f"not settled after {SETTLE_SECONDS:.0f} s: shards {held}, relay coverage {covered}/{total}")


async def run(count: int, feed: list[tuple[str, bytes]], users: list[str], workers: int = 1) -> dict[str, Any]:
    """Start `count` instances (of `workers` processes each) on a new database, push the feed through them; what
    was measured."""
    database = f"pushstr_bench_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{database}"')
    store_url = make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return await _run_in(Path(tmp), count, store_url, feed, users, workers)
    finally:
        await _admin(f'DROP DATABASE "{database}" WITH (FORCE)')


async def _run_in(  # noqa: PLR0917 - the run's parameters, passed on from `run`
    workdir: Path, count: int, store_url: str, feed: list[tuple[str, bytes]], users: list[str], workers: int
) -> dict[str, Any]:
    await store_users(store_url, users)
    loop = asyncio.get_running_loop()
    secret = Keys.generate().secret_hex
    with ApnsProcess(workdir) as apns, RelayProcess(feed, workdir) as relay:
        ports = [free_port() for _ in range(count)]
        instances = []
        for n, port in enumerate(ports):
            first = free_run(workers) if workers > 1 else None  # worker k's metrics at first + k
            config = instance_toml(n, port, workdir, store_url, relay.url, apns, secret, workers, first)
            ports_of = [first + k for k in range(workers)] if first is not None else None
            instances.append(Instance(config, port, workdir / f"node{n}.log", ports_of))
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                for node in instances:
                    await node.ready(client)
                settle = await _settle(instances, relay, len(users), client)
                pids: dict[str, int] = {}
                for n, node in enumerate(instances):
                    pids |= node.pids(f"pushstr-{n}")
                pids |= {"relay": relay.pid, "fake_apns": apns.pid}
                before = cpu_seconds(pids)
                written_at, written = await loop.run_in_executor(None, relay.go)
                await loop.run_in_executor(None, _await_pushes, apns, len(feed))
                arrivals, _tokens = await loop.run_in_executor(None, apns.arrivals)
                after = cpu_seconds(pids)
                samples = [await node.metrics(client, url) for node in instances for url in node.metrics_urls]
        finally:
            for node in instances:
                node.stop()
    last = max((at for _, at in arrivals), default=written_at)
    seconds = max(last - written_at, 1e-9)
    ids = {event_id for event_id, _ in arrivals}
    return {
        "instances": count,
        "workers": workers,
        "events": len(feed),
        "written": written,
        "pushes": len(arrivals),
        "distinct_events_pushed": len(ids),
        "duplicates": len(arrivals) - len(ids),
        "seconds": round(seconds, 3),
        "pushes_per_second": round(len(ids) / seconds, 1),
        "settle_seconds": round(settle, 2),
        "cpu_share": {name: round((after[name] - before[name]) / seconds, 2) for name in after if name in before},
        # per process: an instance, or each worker of one
        "req_frames_per_instance": [value(s, "pushstr_relay_sent_total", type="REQ") for s in samples],
        "events_received_per_instance": [value(s, "pushstr_relay_messages_total", type="EVENT") for s in samples],
        "shards_per_instance": [value(s, "pushstr_cluster_shards_held") for s in samples],
    }


# -- main ------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 and 2 instances: a few seconds each")
    parser.add_argument("--json", type=Path, default=None, help="report path (default bench/out/cluster-*.json)")
    parser.add_argument("--events", type=int, default=None, help="gift wraps in the feed (default 8000; smoke 60)")
    parser.add_argument("--users", type=int, default=None, help="registered users (default 2000; smoke 30)")
    parser.add_argument("--instances", default=None, help="comma-separated instance counts (default 1,2,3)")
    parser.add_argument(
        "--workers", default="2", help="comma-separated `server.workers` of one instance, compared with 1 (default 2)"
    )
    args = parser.parse_args()
    events = args.events or (60 if args.smoke else 8000)
    users_count = args.users or (30 if args.smoke else 2000)
    counts = [int(n) for n in (args.instances or ("1,2" if args.smoke else "1,2,3")).split(",")]

    users = [Keys.generate().public_hex for _ in range(users_count)]
    wraps = make_events(events, users)
    feed = [(users[i % len(users)], raw) for i, (_id, raw) in enumerate(wraps)]
    runs = []
    for count, workers in [(count, 1) for count in counts] + [(1, int(w)) for w in args.workers.split(",") if w]:
        result = asyncio.run(run(count, feed, users, workers))
        runs.append(result)
        print(
            f"{count} instance(s) × {workers} worker(s): {grouped(result['pushes_per_second'])} pushes/s, "
            f"{result['duplicates']} duplicates, REQs {result['req_frames_per_instance']}, cpu {result['cpu_share']}"
        )
    single = runs[0]["pushes_per_second"]
    rows = []
    for result in runs:
        complete = result["distinct_events_pushed"] == result["events"] and result["duplicates"] == 0
        reqs = "/".join(grouped(n) for n in result["req_frames_per_instance"])
        figure = f"{grouped(result['pushes_per_second'])} pushes/s; REQs per instance {reqs}"
        if not complete:
            figure += f" ({result['events'] - result['distinct_events_pushed']} missing, {result['duplicates']} dup)"
        who = (
            f"{result['instances']} instance(s)"
            if result["workers"] == 1
            else f"1 instance of {result['workers']} workers (`server.workers`)"
        )
        rows.append(
            Row(
                what=f"cluster: {who} on one PostgreSQL, {grouped(events)} gift wraps "
                f"to {grouped(users_count)} users, relay → fake APNs",
                figure=figure,
                limit=f"1 instance: {grouped(single)}/s",
                ratio=result["pushes_per_second"] / single if single else None,
                target="every event pushed once (ratio: vs 1 instance; 2 cores for every process)",
                met=complete,
                command=COMMAND + (" --smoke" if args.smoke else ""),
            )
        )
    write_report(args.json, "cluster", rows, {"smoke": args.smoke, "users": users_count, "runs": runs})
    if not all(row.met for row in rows):
        sys.exit("not every event was pushed exactly once")


if __name__ == "__main__":
    main()
