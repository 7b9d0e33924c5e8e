"""Alert titles: senders of alerts are watched, their kind-0 names reach the profile cache."""

from __future__ import annotations

from typing import Any

import orjson

from pushstr.config import AppConfig
from pushstr.engine.admission import Admission, AdmissionLimits
from pushstr.engine.dedupe import SeenIds
from pushstr.engine.pipeline import Pipeline
from pushstr.engine.profiles import MemoryProfileCache, ProfileWatch
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Notification

ALICE, BOB = Keys.generate(), Keys.generate()


class Collect:
    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def submit(self, notification: Notification, device: Registration) -> bool:
        self.sent.append(notification)
        return True


class _Handled:
    def record(self, event_id: str) -> None:
        return None


def _setup(mode: str) -> tuple[Pipeline, ProfileWatch, MemoryProfileCache, list[int]]:
    cache = MemoryProfileCache()
    changes: list[int] = []
    watch = ProfileWatch(cache, on_change=lambda: changes.append(1))
    device = Registration(BOB.public_hex, "t", Platform.IOS, "app", kinds=frozenset({4, Kind.METADATA}))
    pipeline = Pipeline(
        Admission(AdmissionLimits(65536, 3600), SeenIds(1000)),
        lambda pubkey: [device] if pubkey == BOB.public_hex else [],
        Collect(),
        {"app": AppConfig(mode=mode)},  # type: ignore[arg-type]
        _Handled(),
        alert_sender=watch.want,
    )
    pipeline.add_kind_handler(Kind.METADATA, watch.on_metadata)
    return pipeline, watch, cache, changes


def _profile(name: str, created_at: int) -> dict[str, Any]:
    return sign_event(ALICE, Kind.METADATA, orjson.dumps({"name": name}).decode(), created_at=created_at).to_dict()


def test_alert_sender_is_watched_and_named() -> None:
    pipeline, watch, cache, changes = _setup("alert")
    pipeline.ingest(sign_event(ALICE, 4, "x", [["p", BOB.public_hex]]).to_dict())
    pipeline.ingest(sign_event(ALICE, 4, "y", [["p", BOB.public_hex]]).to_dict())
    assert changes == [1]  # one new sender, one re-plan
    assert watch.filters() == ({"kinds": [0], "authors": [ALICE.public_hex], "since": 0},)
    # A years-old profile is still current: admission lets kind 0 through whatever its age.
    assert pipeline.ingest(_profile("Alice", 1_500_000_000)).accepted
    assert cache.display_name(ALICE.public_hex) == "Alice"
    pipeline.ingest(_profile("Old Alice", 1_400_000_000))
    assert cache.display_name(ALICE.public_hex) == "Alice"


def test_silent_mode_watches_nobody_and_unwatched_profiles_are_ignored() -> None:
    pipeline, watch, cache, changes = _setup("silent")
    pipeline.ingest(sign_event(ALICE, 4, "x", [["p", BOB.public_hex]]).to_dict())
    pipeline.ingest(_profile("Alice", 1_500_000_000))
    assert changes == []
    assert watch.filters() == ()
    assert cache.display_name(ALICE.public_hex) is None


def test_watch_is_bounded_and_chunked() -> None:
    watch = ProfileWatch(MemoryProfileCache(), on_change=lambda: None, max_authors=700)
    for _ in range(800):
        watch.want(Keys.generate().public_hex)
    filters = watch.filters()
    assert [len(f["authors"]) for f in filters] == [500, 200]
