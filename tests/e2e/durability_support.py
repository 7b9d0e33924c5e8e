"""Helpers for the durability end-to-end tests: pushstr as a real subprocess that can be killed and restarted, a
fake APNs that can be down or failing and records what it answered, and Prometheus scraping.

pushstr runs as `pushstr serve --config FILE` (the console script of the venv) with `PYTHONPATH` set to the source
tree the tests themselves imported, so a test run against a snapshot of another commit exercises that commit's
server too. Everything it prints goes to one log file per test; `tail()` of it is put into assertion messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
import websockets
from prometheus_client.parser import text_string_to_metric_families

import pushstr
from tests.fakes import APNS_TOPIC, ApnsKey
from tests.fakes.apns import FakeAPNs
from tests.fakes.h2server import Request, Response

#: The console script; the brief of these tests is that pushstr runs exactly as an operator runs it.
PUSHSTR_BIN = Path(sys.executable).with_name("pushstr")
#: The source tree the tests imported pushstr from (…/src): the subprocess runs the same code.
PUSHSTR_SRC = Path(pushstr.__file__).resolve().parents[1]
#: How long a start may take until `GET /ready` answers 200.
READY_SECONDS = 20.0
#: A graceful stop may drain requests in flight (`outbox.drain_seconds`, 10 s by default) and then close the store.
STOP_SECONDS = 30.0


class Timeout(AssertionError):
    """A condition did not hold in time: an assertion failure (the message says what was missing)."""


async def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds, else fail saying `what` was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


# --- the fake provider --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    """One request the fake APNs answered, with the status it answered."""

    device_token: str
    status: int
    event_id: str | None
    received_at: float


class RecordingAPNs(FakeAPNs):
    """A FakeAPNs that also records the status of every answer, so a 503'd attempt is not counted as a push."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered: list[Answered] = []

    def _handle(self, request: Request) -> Response:
        response = super()._handle(request)
        try:
            payload = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            payload = {}
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        token = request.path.removeprefix("/3/device/")
        self.answered.append(Answered(token, response.status, event_id, time.monotonic()))
        return response


class Provider:
    """The fake APNs on a fixed port, started and stopped at will; `down` means nothing listens on the port.

    The certificate is made once (a first start and stop) so pushstr's `ca_file` exists before the provider is
    ever up, and stays the same across restarts (pushstr loads it once).
    """

    def __init__(self, key: ApnsKey, workdir: Path, port: int) -> None:
        self.port = port
        self.url = f"https://127.0.0.1:{port}"
        self.fake = RecordingAPNs(key.private.public_key(), key.key_id, key.team_id, workdir, port=port)
        self.up = False

    @property
    def ca_file(self) -> Path:
        return self.fake.ca_file

    async def prepare(self) -> None:
        """Mint the certificate without leaving anything listening."""
        await self.start()
        await self.stop()

    async def start(self) -> None:
        await self.fake.start()
        self.up = True

    async def stop(self) -> None:
        await self.fake.stop()
        self.up = False

    def fail_everything(self, status: int = 503, reason: str = "ServiceUnavailable") -> None:
        self.fake.set_response(status, reason, times=None)

    def succeed(self) -> None:
        self.fake.set_response(200, times=None)

    def delivered(self) -> list[Answered]:
        """The requests answered 200: the pushes a phone would have got."""
        return [answer for answer in self.fake.answered if answer.status == 200]

    def per_token(self) -> Counter[str]:
        return Counter(answer.device_token for answer in self.delivered())

    def per_event(self) -> Counter[str | None]:
        return Counter(answer.event_id for answer in self.delivered())

    def last_answer_at(self) -> float:
        return self.fake.answered[-1].received_at if self.fake.answered else 0.0


# --- pushstr as a subprocess --------------------------------------------------------------------------------------


@dataclass
class Config:
    """What goes into the TOML file; the same file is used by every start, so data dir and port stay."""

    data_dir: Path
    port: int
    relay_url: str
    secret_key: str
    provider: Provider
    key: ApnsKey
    #: `alert` puts the event id into every APNs payload: the tests count and order pushes per event.
    mode: str = "alert"
    #: More TOML sections (a shared store, `[cluster]`), appended as they are.
    extra: str = ""
    #: `nostr.relay_update_interval_seconds`: how soon a new registration reaches the relay's subscription.
    update_interval: float = 1.0
    #: `server.public_url`, which NIP-98 `u` tags name (unset: the URL a request reached).
    public_url: str | None = None
    #: `server.workers`: one process per instance unless a test asks for the supervisor.
    workers: int = 1
    #: `server.metrics_port`: worker k's own `/metrics` at this port + k.
    metrics_port: int | None = None

    def toml(self) -> str:
        return f"""
[server]
data_dir = "{self.data_dir}"
port = {self.port}
workers = {self.workers}
{f"metrics_port = {self.metrics_port}" if self.metrics_port else ""}
{f'public_url = "{self.public_url}"' if self.public_url else ""}

[nostr]
relays = ["{self.relay_url}"]
secret_key = "{self.secret_key}"
reconnect_min_seconds = 0.2
reconnect_max_seconds = 1
connect_timeout_seconds = 2
relay_update_interval_seconds = {self.update_interval}

[apps.ios]
transport = "apns"
base_url = "{self.provider.url}"
ca_file = "{self.provider.ca_file}"
key_file = "{self.key.key_file}"
key_id = "{self.key.key_id}"
team_id = "{self.key.team_id}"
topic = "{APNS_TOPIC}"
environment = "sandbox"
mode = "{self.mode}"
backoff_base_seconds = 0.2
backoff_max_seconds = 1
{self.extra}"""


@dataclass
class Pushstr:
    """`pushstr serve --config FILE` in `workdir`, restartable on the same data dir and port."""

    config: Config
    workdir: Path
    log_file: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}/"

    @property
    def config_file(self) -> Path:
        return self.workdir / "pushstr.toml"

    async def start(self) -> None:
        """Start and wait until `GET /ready` answers 200 (failing early, with the log, if the process exits)."""
        assert self.process is None, "already running"
        self.config_file.write_text(self.config.toml())
        self.starts += 1
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PUSHSTR_SRC), os.environ.get("PYTHONPATH", "")])}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_file.open("ab") as log:
            log.write(f"\n===== start #{self.starts} ({PUSHSTR_SRC}) =====\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                str(PUSHSTR_BIN),
                "serve",
                "--config",
                str(self.config_file),
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + READY_SECONDS
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                code = self.process.returncode
                if code is not None:
                    self.process = None
                    raise AssertionError(f"pushstr exited with {code} while starting\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.base_url + "/ready")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"pushstr not ready after {READY_SECONDS:.0f} s\n{self.tail()}")
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: nothing is flushed, nothing is drained."""
        assert self.process is not None
        self.process.kill()
        self.exit_codes.append(await asyncio.wait_for(self.process.wait(), 10))
        self.process = None

    async def terminate(self) -> int:
        """SIGTERM and wait for the graceful exit; its status."""
        assert self.process is not None
        process = self.process
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
            raise AssertionError(f"pushstr still running {STOP_SECONDS:.0f} s after SIGTERM\n{self.tail()}") from None
        finally:
            self.process = None
        self.exit_codes.append(code)
        return code

    async def cleanup(self) -> None:
        """Teardown: kill what is still running (only the process this object started)."""
        if self.process is not None:
            if self.process.returncode is None:
                self.process.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 10)
            self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def tail(self, lines: int = 60) -> str:
        if not self.log_file.exists():
            return "(no pushstr output)"
        text = self.log_file.read_text(errors="replace").splitlines()
        return "----- pushstr output (tail) -----\n" + "\n".join(text[-lines:])

    async def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """`/metrics` parsed: sample name → [(labels, value)]."""
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.base_url + "/metrics")
        response.raise_for_status()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
        return samples

    async def metric(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of `name` matching `labels`; None when there is no such sample."""
        found = [
            value
            for sample_labels, value in (await self.metrics()).get(name, [])
            if all(sample_labels.get(key) == wanted for key, wanted in labels.items())
        ]
        return sum(found) if found else None

    async def wait_metric(self, name: str, predicate: Callable[[float], bool], timeout: float, what: str) -> None:
        """Poll `/metrics` until `name` (summed) satisfies `predicate`; the process must stay alive meanwhile."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while True:
            if not self.alive():
                raise AssertionError(f"pushstr died while waiting for {what}\n{self.tail()}")
            last = await self.metric(name)
            if last is not None and predicate(last):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last {name} = {last})")
            await asyncio.sleep(0.05)


# --- Nostr side ---------------------------------------------------------------------------------------------------


class Publisher:
    """One WebSocket to a relay (or pushstr's endpoint) for many events: a steady stream without reconnects."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ws: Any = None

    async def __aenter__(self) -> Publisher:
        self._ws = await websockets.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()

    async def send(self, event: Any, timeout: float = 10.0) -> list[Any]:
        """Send `["EVENT", event]` and return its `["OK", id, accepted, message]` (other frames are skipped)."""
        await self._ws.send(f'["EVENT",{event.as_json()}]')
        event_id = event.id().to_hex()
        async with asyncio.timeout(timeout):
            while True:
                reply = orjson.loads(await self._ws.recv())
                if reply[0] == "OK" and reply[1] == event_id:
                    return list(reply)


def new_token() -> str:
    """A random APNs-style device token (64 hex characters)."""
    return os.urandom(32).hex()


@dataclass(frozen=True)
class Recipient:
    keys: Any
    token: str


def recipients(count: int) -> list[Recipient]:
    return [Recipient(nostr_sdk.Keys.generate(), new_token()) for _ in range(count)]


def summary(expected: Iterable[str], counts: Counter[str]) -> str:
    """How many of the `expected` tokens got no push and which got more than one (a device expecting several
    pushes shows there with its count): the message of a failed exactly-once check."""
    expected = list(expected)
    missing = [key for key in expected if counts[key] == 0]
    twice = {key[:12]: counts[key] for key in expected if counts[key] > 1}
    extra = {str(key)[:12]: n for key, n in counts.items() if key not in set(expected)}
    return (
        f"{len(expected) - len(missing)}/{len(expected)} devices got a push, {len(missing)} got none, "
        f"{len(twice)} got more than one {twice or ''}{f', unexpected {extra}' if extra else ''}"
    )
