"""The event path: admission → kind handlers → match → policy → one notification per device for delivery.

Relay events are matched before they are verified; the built-in endpoint verifies every event. Whether an event
was verified is read from admission's counters: a forged event that is verified is counted `bad_id` or
`bad_signature`, one dropped unverified `unmatched`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from pushstr.config import AppConfig, LogAppConfig
from pushstr.engine.admission import ADMITTED, REJECTED, Admission, AdmissionLimits
from pushstr.engine.dedupe import SeenIds
from pushstr.engine.pipeline import Pipeline, Policy
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.transports.base import Notification

ALICE, BOB = Keys.generate(), Keys.generate()
STRANGER = Keys.generate().public_hex
RELAY = "wss://relay.example"


class Collect:
    """Stands in for delivery; `accept` decides what `submit` answers."""

    def __init__(self, accept: bool = True) -> None:
        self.sent: list[tuple[Notification, Registration]] = []
        self.accept = accept

    def submit(self, notification: Notification, device: Registration) -> bool:
        self.sent.append((notification, device))
        return self.accept


class Handled:
    """Stands in for the outbox's handled-event log."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def record(self, event_id: str) -> None:
        self.ids.append(event_id)

    @property
    def pending(self) -> int:
        return len(self.ids)


class Directory:
    """Stands in for the registry's lookup: Bob's devices, nobody else's; remembers every pubkey asked for."""

    def __init__(self, devices: list[Registration]) -> None:
        self.devices = devices
        self.asked: list[str] = []

    def __call__(self, pubkey: str) -> Sequence[Registration]:
        self.asked.append(pubkey)
        return self.devices if pubkey == BOB.public_hex else []


def _device(
    mode: Mode | None = None, kinds: frozenset[int] = frozenset({1, 4, 9735}), app: str = "app"
) -> Registration:
    return Registration(BOB.public_hex, "phone", Platform.IOS, app, kinds=kinds, mode=mode)


def _pipeline(
    devices: list[Registration],
    app: AppConfig | None = None,
    *,
    delivery: Collect | None = None,
    policy: Policy | None = None,
    seen: SeenIds | None = None,
    directory: Directory | None = None,
) -> tuple[Pipeline, Collect, Handled]:
    collect = delivery or Collect()
    pushed = Handled()
    pipeline = Pipeline(
        Admission(AdmissionLimits(65536, 3600), SeenIds(1000) if seen is None else seen),
        Directory(devices) if directory is None else directory,
        collect,
        {"app": app or LogAppConfig()},
        pushed,
        policy=policy,
    )
    return pipeline, collect, pushed


def _to_bob(kind: int = 4, content: str = "x", tags: list[list[str]] | None = None) -> dict[str, Any]:
    return sign_event(ALICE, kind, content, [["p", BOB.public_hex], *(tags or [])]).to_dict()


def _rejected(reason: str) -> int:
    return REJECTED.value(reason)


def _counter(result: str) -> float:
    return REGISTRY.get_sample_value("pushstr_notifications_total", {"result": result}) or 0.0


def test_a_dm_becomes_one_notification_without_its_content() -> None:
    pipeline, collect, pushed = _pipeline([_device()])
    event = _to_bob(content="secret words")
    result = pipeline.ingest(event, "wss://relay.example")
    assert (result.accepted, result.notified) == (True, 1)
    ((notification, _),) = collect.sent
    assert (notification.event_id, notification.kind, notification.recipient) == (event["id"], 4, BOB.public_hex)
    assert notification.sender == ALICE.public_hex and notification.relay == "wss://relay.example"
    assert notification.event_json is None and notification.preview is None
    assert "secret words" not in repr(notification)
    assert notification.conversation == ALICE.public_hex  # DMs collapse per sender
    assert pushed.pending == 1


@pytest.mark.parametrize(
    ("mode", "carries_event"),
    [(Mode.SILENT, False), (Mode.ALERT, False), (Mode.ALERT_EVENT, True), (Mode.ENCRYPTED, True)],
)
def test_the_signed_event_travels_only_with_the_modes_that_carry_it(mode: Mode, carries_event: bool) -> None:
    pipeline, collect, _ = _pipeline([_device(mode=mode)])
    event = _to_bob()
    pipeline.ingest(event)
    ((notification, _),) = collect.sent
    assert notification.mode is mode
    assert (notification.event_json is not None) is carries_event
    if carries_event:
        assert orjson.loads(notification.event_json or b"")["id"] == event["id"]


def test_the_registration_mode_wins_over_the_app_mode() -> None:
    pipeline, collect, _ = _pipeline([_device(mode=Mode.SILENT)], LogAppConfig(mode=Mode.ALERT))
    pipeline.ingest(_to_bob())
    assert collect.sent[0][0].mode is Mode.SILENT


def test_mention_preview_is_cut_to_the_apps_length_and_only_for_notes() -> None:
    pipeline, collect, _ = _pipeline([_device()], LogAppConfig(mode=Mode.ALERT, preview_length=5))
    pipeline.ingest(_to_bob(kind=1, content="hello world"))
    pipeline.ingest(_to_bob(kind=4, content="hello world"))
    assert [n.preview for n, _ in collect.sent] == ["hello", None]


def test_zap_receipts_carry_their_sats_and_name_the_zapper() -> None:
    zapper = Keys.generate().public_hex
    request = orjson.dumps({"kind": 9734, "pubkey": zapper, "tags": [["amount", "21000"]]}).decode()
    pipeline, collect, _ = _pipeline([_device()])
    pipeline.ingest(_to_bob(kind=9735, content="", tags=[["description", request], ["bolt11", "lnbc50u1p"]]))
    pipeline.ingest(_to_bob(kind=9735, content="", tags=[["bolt11", "lnbc2500n1p"]]))
    pipeline.ingest(_to_bob(kind=9735, content="", tags=[]))
    assert [n.extra for n, _ in collect.sent] == [{"sats": "21"}, {"sats": "250"}, {}]
    assert [n.sender for n, _ in collect.sent] == [zapper, None, None]


def test_kinds_the_device_did_not_ask_for_and_strangers_reach_nobody() -> None:
    pipeline, collect, pushed = _pipeline([_device(kinds=frozenset({4}))])
    assert pipeline.ingest(_to_bob(kind=1)).notified == 0
    assert pipeline.ingest(sign_event(ALICE, 4, "x", [["p", ALICE.public_hex]]).to_dict()).notified == 0
    assert collect.sent == [] and pushed.pending == 0


def test_policy_holds_back_and_the_event_still_counts_as_handled() -> None:
    held = _counter("held_back")
    pipeline, collect, pushed = _pipeline([_device()], policy=lambda event, device: False)
    assert pipeline.ingest(_to_bob()).notified == 0
    assert collect.sent == []
    assert pushed.pending == 1  # not woken later by a catch-up either
    assert _counter("held_back") == held + 1


def test_a_refused_submission_is_counted_dropped() -> None:
    dropped = _counter("dropped")
    pipeline, _, _ = _pipeline([_device()], delivery=Collect(accept=False))
    assert pipeline.ingest(_to_bob()).notified == 0
    assert _counter("dropped") == dropped + 1


def test_duplicates_are_accepted_once_and_bad_events_refused() -> None:
    pipeline, collect, _ = _pipeline([_device()])
    event = _to_bob()
    assert pipeline.ingest(event).notified == 1
    again = pipeline.ingest(event)
    assert again.accepted and again.message.startswith("duplicate:") and again.notified == 0
    forged = {**_to_bob(content="original"), "content": "changed"}
    refused = pipeline.ingest(forged)
    assert not refused.accepted and refused.message.startswith("invalid:")
    assert len(collect.sent) == 1


def test_kind_handlers_take_their_kind_and_a_failing_one_is_contained() -> None:
    pipeline, collect, _ = _pipeline([_device(kinds=frozenset({Kind.PUSH_SETTINGS}))])
    seen: list[Event] = []
    pipeline.add_kind_handler(Kind.PUSH_SETTINGS, seen.append)
    pipeline.ingest(_to_bob(kind=Kind.PUSH_SETTINGS))
    assert len(seen) == 1 and collect.sent == []

    def broken(event: Event) -> None:
        raise RuntimeError("bug")

    pipeline.add_kind_handler(Kind.REACTION, broken)
    errors = REGISTRY.get_sample_value("pushstr_kind_handler_errors_total", {"kind": "7"}) or 0.0
    assert pipeline.ingest(_to_bob(kind=Kind.REACTION)).accepted
    assert REGISTRY.get_sample_value("pushstr_kind_handler_errors_total", {"kind": "7"}) == errors + 1


def test_a_relay_event_that_reaches_nobody_is_dropped_unverified_and_not_remembered() -> None:
    seen = SeenIds(1000)
    pipeline, collect, pushed = _pipeline([_device()], seen=seen)
    real = sign_event(ALICE, 1, "hi", [["p", STRANGER]]).to_dict()
    untagged = sign_event(ALICE, 4, "hi").to_dict()
    copies = [real, {**real, "sig": "11" * 64}, {**real, "content": "changed"}, untagged]  # valid, bad sig, bad id
    before = {reason: _rejected(reason) for reason in ("unmatched", "bad_id", "bad_signature")}
    admitted = ADMITTED.value()
    for obj in copies:
        pipeline.on_relay_event(obj, RELAY)
    assert _rejected("unmatched") == before["unmatched"] + len(copies)
    assert (_rejected("bad_id"), _rejected("bad_signature")) == (before["bad_id"], before["bad_signature"])
    assert ADMITTED.value() == admitted  # not even the valid ones were verified
    assert len(seen) == 0 and collect.sent == [] and pushed.pending == 0


@pytest.mark.parametrize(
    ("forge", "reason"),
    [(lambda obj: obj | {"content": "changed"}, "bad_id"), (lambda obj: obj | {"sig": "11" * 64}, "bad_signature")],
)
def test_a_forged_relay_event_naming_a_registered_user_is_verified_and_refused(
    forge: Callable[[dict[str, Any]], dict[str, Any]], reason: str
) -> None:
    seen = SeenIds(1000)
    pipeline, collect, pushed = _pipeline([_device()], seen=seen)
    real = _to_bob(content="original")
    refused, unmatched = _rejected(reason), _rejected("unmatched")
    pipeline.on_relay_event(forge(real), RELAY)
    assert (_rejected(reason), _rejected("unmatched")) == (refused + 1, unmatched)
    assert collect.sent == [] and pushed.pending == 0 and real["id"] not in seen
    pipeline.on_relay_event(real, RELAY)  # the forged copy carried the real id: it must not shadow it
    assert [notification.event_id for notification, _ in collect.sent] == pushed.ids == [real["id"]]
    assert real["id"] in seen


def test_a_forged_copy_that_reaches_nobody_cannot_shadow_the_real_event() -> None:
    """The copy has the real event's id and signature but names a stranger instead of Bob: it is dropped
    unverified, so nothing about that id is remembered, and the real event still notifies (once)."""
    pipeline, collect, _ = _pipeline([_device()])
    real = _to_bob()
    unmatched = _rejected("unmatched")
    pipeline.on_relay_event({**real, "tags": [["p", STRANGER]]}, RELAY)
    assert _rejected("unmatched") == unmatched + 1
    pipeline.on_relay_event(real, RELAY)
    pipeline.on_relay_event(real, "wss://other.example")  # a second relay's copy is a duplicate
    assert [notification.event_id for notification, _ in collect.sent] == [real["id"]]


@pytest.mark.parametrize("kind", [Kind.PUSH_SETTINGS, Kind.METADATA])
def test_events_of_a_handled_kind_are_verified_even_when_they_name_nobody(kind: Kind) -> None:
    pipeline, collect, _ = _pipeline([_device()])
    got: list[Event] = []
    pipeline.add_kind_handler(kind, got.append)
    event = sign_event(ALICE, kind, "state").to_dict()
    refused, unmatched = _rejected("bad_signature"), _rejected("unmatched")
    pipeline.on_relay_event({**event, "sig": "11" * 64}, RELAY)
    assert got == [] and (_rejected("bad_signature"), _rejected("unmatched")) == (refused + 1, unmatched)
    pipeline.on_relay_event(event, RELAY)
    assert [handled.id for handled in got] == [event["id"]] and collect.sent == []


def test_a_matching_relay_event_is_matched_once_then_verified_and_notified() -> None:
    directory = Directory([_device()])
    pipeline, collect, pushed = _pipeline([], directory=directory)
    event = _to_bob(tags=[["p", STRANGER]])
    admitted = ADMITTED.value()
    pipeline.on_relay_event(event, RELAY)
    assert directory.asked == [BOB.public_hex, STRANGER]  # one lookup per recipient: no second match
    assert ADMITTED.value() == admitted + 1
    ((notification, _),) = collect.sent
    assert (notification.event_id, notification.relay) == (event["id"], RELAY) and pushed.ids == [event["id"]]


def test_the_endpoint_verifies_events_that_reach_nobody() -> None:
    """The endpoint answers OK for each event, so a forged one is refused even when it would notify nobody."""
    seen = SeenIds(1000)
    pipeline, collect, _ = _pipeline([_device()], seen=seen)
    event = sign_event(ALICE, 1, "hi", [["p", STRANGER]]).to_dict()
    refused, unmatched = _rejected("bad_signature"), _rejected("unmatched")
    answer = pipeline.ingest({**event, "sig": "11" * 64})
    assert (answer.accepted, answer.message) == (False, "invalid: bad signature")
    answer = pipeline.ingest(event)
    assert (answer.accepted, answer.notified) == (True, 0) and event["id"] in seen
    assert (_rejected("bad_signature"), _rejected("unmatched")) == (refused + 1, unmatched)
    assert collect.sent == []
