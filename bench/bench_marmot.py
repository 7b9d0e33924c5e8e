"""Benchmark of Marmot Push v1 triggers on one core: opened, checked, decrypted and rendered, beside the raw unwrap.

Triggers are built as a Marmot client builds them (`tests.dialects.marmot_client`): each carries `--tokens` sealed
APNs tokens and as many random padding chunks, gift-wrapped to the server. Measured in one run on the same
triggers:
- the raw NIP-59 unwrap of each trigger (the two ECDH and decryptions of wrap and seal, no signature checks, as
  the dialect does after admission verified the wrap) — the floor every trigger pays;
- the dialect's whole handling: budget, unwrap, rumor checks, base64, dedupe, per-chunk limits, one ECDH +
  ChaCha20-Poly1305 per chunk, and each token's push rendered and encoded for APNs (what delivery queues).

    .venv/bin/python bench/bench_marmot.py [--triggers N] [--tokens N] [--smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, grouped, write_report
from pushstr.config import ApnsAppConfig, MarmotDialectConfig, parse_app
from pushstr.delivery.render import Renderer
from pushstr.dialects.marmot import MarmotPush
from pushstr.nostr import nip59
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from pushstr.transports.apns import ApnsTransport
from pushstr.transports.base import Notification, SendResult
from tests.dialects.marmot_client import APNS, content_of, padding_chunk, seal_token, trigger
from tests.fakes import APNS_TOPIC, make_apns_key

COMMAND = ".venv/bin/python bench/bench_marmot.py"
TARGET_RATIO = 0.2
UNLIMITED = 10**9


class Rendering:
    """The delivery side as far as one core goes: each push rendered and encoded, as `Dispatcher.submit` does."""

    def __init__(self, app: ApnsAppConfig) -> None:
        self._renderer = Renderer(app)
        self._transport = ApnsTransport("bench", app)
        self.encoded = 0

    def submit(self, notification: Notification, device: Registration) -> bool:
        if isinstance(self._renderer.encode(notification, device, self._transport), SendResult):
            return False
        self.encoded += 1
        return True


def _seconds(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def run(count: int, tokens: int, json_path: Path | None) -> None:
    server = Keys.generate()
    with tempfile.TemporaryDirectory() as tmp:
        key = make_apns_key(Path(tmp))
        app = parse_app(
            {
                "transport": "apns",
                "key_file": key.key_file,
                "key_id": key.key_id,
                "team_id": key.team_id,
                "topic": APNS_TOPIC,
            }
        )
        assert isinstance(app, ApnsAppConfig)
        device_tokens = [bytes([index]) * 32 for index in range(tokens)]

        def build() -> list[Event]:
            chunks = [seal_token(server.public_hex, APNS, token) for token in device_tokens]
            return [trigger(server.public_hex, content_of(chunks + [padding_chunk() for _ in range(tokens)]))]

        triggers = [wrap for _ in range(count) for wrap in build()]
        config = MarmotDialectConfig(
            unwraps_per_minute=UNLIMITED, per_token_per_minute=UNLIMITED, per_token_per_hour=UNLIMITED
        )
        sink = Rendering(app)
        dialect = MarmotPush(server, sink, config, apps={Platform.IOS: "bench", Platform.ANDROID: None})

        def raw() -> None:
            for wrap in triggers:
                nip59.unwrap(server, wrap, verify_wrap=False)

        def ours() -> None:
            for wrap in triggers:
                dialect.handle(wrap)

        raw_seconds = min(_seconds(raw) for _ in range(3))
        ours_seconds = _seconds(ours)  # once: a second pass would only count duplicates
    if sink.encoded != count * tokens:
        raise AssertionError(f"expected {count * tokens} pushes, rendered {sink.encoded}")
    raw_rate, ours_rate = count / raw_seconds, count / ours_seconds
    ratio = ours_rate / raw_rate
    row = Row(
        what=f"Marmot triggers ({tokens} tokens + {tokens} padding chunks) opened and rendered, one core",
        figure=f"{grouped(ours_rate)} triggers/s ({grouped(ours_rate * tokens)} pushes/s)",
        limit=f"raw unwrap alone: {grouped(raw_rate)}/s",
        ratio=round(ratio, 3),
        target=f"≥ {TARGET_RATIO}× (a trigger costs {2 * tokens} more key agreements than its unwrap)",
        met=ratio >= TARGET_RATIO,
        command=COMMAND,
    )
    details = {
        "triggers": count,
        "tokens_per_trigger": tokens,
        "chunks_per_trigger": 2 * tokens,
        "raw_unwrap_per_s": round(raw_rate),
        "triggers_per_s": round(ours_rate),
        "pushes_per_s": round(ours_rate * tokens),
        "microseconds_per_chunk": round((ours_seconds - raw_seconds) / (count * 2 * tokens) * 1e6, 1),
    }
    write_report(json_path, "marmot", [row], details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=1_000)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, measures nothing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    run(20 if args.smoke else args.triggers, 2 if args.smoke else args.tokens, args.json)


if __name__ == "__main__":
    main()
