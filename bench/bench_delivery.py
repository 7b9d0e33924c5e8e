"""Pushes per second from pushstr's dispatcher to the fake APNs, beside h2load against the same fake.

The fake runs in its own process (so client and server do not share a GIL) and checks every provider token.
h2load (Debian package nghttp2-client) sends the same request with the same token, so its figure is the ceiling
the fake allows on this machine; pushstr's target is at least 0.8 of it.

    .venv/bin/python bench/bench_delivery.py [--pushes 20000] [--concurrency 200] [--smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from bench.common import Row, grouped, write_report  # noqa: E402
from pushstr.config import ApnsAppConfig, parse_app  # noqa: E402
from pushstr.delivery.dispatcher import Dispatcher, Lane  # noqa: E402
from pushstr.delivery.render import Renderer  # noqa: E402
from pushstr.registry.model import Platform, Registration  # noqa: E402
from pushstr.transports.apns import ApnsTransport, aps_payload  # noqa: E402
from pushstr.transports.base import Notification  # noqa: E402
from pushstr.transports.jwt_cache import ProviderTokens  # noqa: E402
from tests.fakes import APNS_TOPIC, make_apns_key  # noqa: E402
from tests.fakes.apns import FakeAPNs  # noqa: E402

DEVICE_TOKEN = "ab" * 32
COMMAND = ".venv/bin/python bench/bench_delivery.py"
TARGET_RATIO = 0.8


def _serve(public_pem: bytes, key_id: str, team_id: str, workdir: str, ready: Any) -> None:
    """Child process: run the fake until killed, reporting its port and CA file through `ready`."""

    async def main() -> None:
        public = serialization.load_pem_public_key(public_pem)
        fake = FakeAPNs(public, key_id, team_id, Path(workdir), record=False)  # type: ignore[arg-type]
        await fake.start()
        ready.put((fake.url, str(fake.ca_file)))
        await asyncio.Event().wait()

    asyncio.run(main())


def run_h2load(url: str, token: str, body_file: Path, pushes: int, streams: int) -> dict[str, Any]:
    command = [
        "h2load",
        "-n",
        str(pushes),
        "-c",
        "1",
        "-m",
        str(streams),
        "-d",
        str(body_file),
        "-H",
        f"authorization: bearer {token}",
        "-H",
        f"apns-topic: {APNS_TOPIC}",
        "-H",
        "apns-push-type: background",
        "-H",
        "apns-priority: 5",
        f"{url}/3/device/{DEVICE_TOKEN}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", output).group(1))  # type: ignore[union-attr]
    succeeded = int(re.search(r"(\d+) succeeded", output).group(1))  # type: ignore[union-attr]
    codes = re.search(r"status codes: (\d+) 2xx", output)
    return {"pushes_per_second": rate, "succeeded": succeeded, "2xx": int(codes.group(1)) if codes else None}


async def run_pushstr(app: ApnsAppConfig, pushes: int) -> dict[str, Any]:
    ok = 0

    async def never(_device: Registration, _stamp: float | None) -> None:
        return None

    transport = ApnsTransport("bench", app, tokens=ProviderTokens())
    lane_app = app.model_copy(update={"queue_size": pushes, "max_attempts": 1})
    dispatcher = Dispatcher({"bench": Lane(transport, Renderer(lane_app))}, never)
    await dispatcher.start()
    # One device per push: a device gets its pushes one at a time (in order), so one device would measure a
    # provider's round trip, not the dispatcher's throughput.
    devices = [Registration("a" * 64, f"{n:064x}", Platform.IOS, "bench") for n in range(pushes)]
    device = Registration("a" * 64, DEVICE_TOKEN, Platform.IOS, "bench")
    notes = [Notification(f"{n:064x}", 1059, "a" * 64, None, 1, "bench") for n in range(pushes)]
    # Warm up: TLS handshake, HTTP/2 settings, the provider token.
    dispatcher.submit(notes[0], device)
    await dispatcher.idle(30)
    started = time.perf_counter()
    for index, note in enumerate(notes):
        ok += dispatcher.submit(note, devices[index])
    await dispatcher.idle(600)
    elapsed = time.perf_counter() - started
    await dispatcher.close()
    return {"pushes_per_second": pushes / elapsed, "accepted": ok, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200, help="streams in flight (h2load -m, dispatcher)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; h2load is skipped when not installed")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    pushes, concurrency = (300, 20) if args.smoke else (args.pushes, args.concurrency)
    has_h2load = shutil.which("h2load") is not None
    if not has_h2load and not args.smoke:
        sys.exit("h2load not found: apt-get install -y nghttp2-client")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        key = make_apns_key(workdir)
        public_pem = key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        server = context.Process(target=_serve, args=(public_pem, key.key_id, key.team_id, tmp, ready), daemon=True)
        server.start()
        try:
            url, ca_file = ready.get(timeout=30)
            app = parse_app(
                {
                    "transport": "apns",
                    "base_url": url,
                    "ca_file": ca_file,
                    "key_file": key.key_file,
                    "key_id": key.key_id,
                    "team_id": key.team_id,
                    "topic": APNS_TOPIC,
                    "concurrency": concurrency,
                }
            )
            token = jwt.encode(
                {"iss": key.team_id, "iat": int(time.time())},
                key.private,
                algorithm="ES256",
                headers={"kid": key.key_id},
            )
            body_file = workdir / "body.json"
            body_file.write_text(json.dumps(aps_payload_silent()))
            h2load = run_h2load(url, token, body_file, pushes, concurrency) if has_h2load else None
            pushstr = asyncio.run(run_pushstr(app, pushes))
        finally:
            server.kill()
            server.join(5)

    ratio = pushstr["pushes_per_second"] / h2load["pushes_per_second"] if h2load else None
    row = Row(
        what=f"delivery: dispatcher → fake APNs (HTTP/2 over TLS, JWT checked), {grouped(pushes)} pushes, "
        f"{concurrency} streams",
        figure=f"{grouped(pushstr['pushes_per_second'])} pushes/s",
        limit=f"h2load: {grouped(h2load['pushes_per_second'])}/s" if h2load else "h2load not installed",
        ratio=None if ratio is None else round(ratio, 3),
        target=f"≥ {TARGET_RATIO}×",
        met=None if ratio is None else ratio >= TARGET_RATIO,
        command=COMMAND,
    )
    details = {"pushes": pushes, "concurrency": concurrency, "h2load": h2load, "pushstr": pushstr}
    write_report(args.json, "delivery", [row], details)


def aps_payload_silent() -> dict[str, Any]:
    """The same body the dispatcher sends for a silent push, so both clients move the same bytes."""
    from pushstr.delivery.render import Rendered

    return aps_payload(Rendered("silent", data={"count": "1"}))


if __name__ == "__main__":
    main()
