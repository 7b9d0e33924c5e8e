"""The Marmot Push v1 dialect: triggers gift-wrapped to the server become silent pushes, stored nowhere.

Triggers are built the way Marmot clients build them (`marmot_client`) and go through a real pipeline and
admission, so the routing (only gift wraps to the server are claimed) and the size exception are exercised too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest
from prometheus_client import REGISTRY

from pushstr.config import LogAppConfig, MarmotDialectConfig
from pushstr.dialects import marmot
from pushstr.dialects.marmot import MAX_TRIGGER_EVENT_BYTES, MarmotPush
from pushstr.dialects.marmot_token import DeviceToken, decrypt_chunk
from pushstr.engine.admission import REJECTED, Admission, AdmissionLimits, Rejected
from pushstr.engine.dedupe import SeenIds
from pushstr.engine.pipeline import Pipeline
from pushstr.nostr import nip44, nip59
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.transports.base import Notification
from tests.dialects.marmot_client import APNS, FCM, TAGS, content_of, padding_chunk, seal_token, trigger

SERVER = Keys.generate()
BOB = Keys.generate()
APNS_TOKEN = bytes(range(100, 132))
FCM_TOKENS = (b"fcm-token-one:APA91b", b"fcm-token-two:APA91b")
RELAY = "wss://relay.example"


class Collect:
    """Stands in for delivery: what was submitted."""

    def __init__(self) -> None:
        self.sent: list[tuple[Notification, Registration]] = []

    def submit(self, notification: Notification, device: Registration) -> bool:
        self.sent.append((notification, device))
        return True


class Handled:
    def record(self, event_id: str) -> None:
        """Nothing to remember here."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _bob_devices(pubkey: str) -> Sequence[Registration]:
    if pubkey != BOB.public_hex:
        return []
    return [Registration(BOB.public_hex, "bob-phone", Platform.ANDROID, "log", kinds=frozenset({1059}))]


def _setup(
    config: MarmotDialectConfig | None = None,
    apps: dict[Platform, str | None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[Pipeline, MarmotPush, Collect]:
    collect = Collect()
    admission = Admission(AdmissionLimits(64 * 1024, 3 * 24 * 3600), SeenIds(1000))
    pipeline = Pipeline(admission, _bob_devices, collect, {"log": LogAppConfig()}, Handled())
    dialect = MarmotPush(
        SERVER,
        collect,
        config or MarmotDialectConfig(),
        apps={Platform.IOS: "log", Platform.ANDROID: "log"} if apps is None else apps,
        monotonic=monotonic,
    )
    for kind, handler in dialect.kind_handlers().items():
        pipeline.add_kind_handler(kind, handler)
    return pipeline, dialect, collect


def _tokens() -> list[bytes]:
    return [
        seal_token(SERVER.public_hex, APNS, APNS_TOKEN),
        seal_token(SERVER.public_hex, FCM, FCM_TOKENS[0]),
        seal_token(SERVER.public_hex, FCM, FCM_TOKENS[1]),
    ]


def _chunks(result: str) -> float:
    return REGISTRY.get_sample_value("pushstr_marmot_chunks_total", {"result": result}) or 0.0


def _triggers(result: str) -> float:
    return REGISTRY.get_sample_value("pushstr_marmot_triggers_total", {"result": result}) or 0.0


def test_a_trigger_pushes_every_token_silently_and_skips_the_rest() -> None:
    pipeline, _, collect = _setup()
    valid = _tokens()
    tampered = bytearray(seal_token(SERVER.public_hex, FCM, b"never-pushed"))
    tampered[100] ^= 1
    chunks = [valid[0], padding_chunk(), valid[1], bytes(tampered), padding_chunk(), valid[2]]
    pushed, skipped = _chunks("pushed"), _chunks("undecryptable") + _chunks("bad_ephemeral_key")
    wrap = trigger(SERVER.public_hex, content_of(chunks))
    pipeline.on_relay_event(wrap.to_dict(), RELAY)

    assert [(device.platform, device.device_token) for _, device in collect.sent] == [
        (Platform.IOS, APNS_TOKEN.hex()),
        (Platform.ANDROID, FCM_TOKENS[0].decode()),
        (Platform.ANDROID, FCM_TOKENS[1].decode()),
    ]
    for notification, device in collect.sent:
        assert notification.mode is Mode.SILENT and device.mode is Mode.SILENT
        assert not device.persistent  # never written to the store or the outbox table
        assert notification.event_id == wrap.id and notification.sender is None
        assert device.dialect == "marmot" and device.app == "log"
    assert _chunks("pushed") == pushed + 3
    assert _chunks("undecryptable") + _chunks("bad_ephemeral_key") == skipped + 3


def test_the_server_claims_only_its_own_gift_wraps() -> None:
    """A user's NIP-17 message is a kind 1059 too: it is still matched to the user's device."""
    pipeline, _, collect = _setup()
    dm = nip59.wrap(Keys.generate(), BOB.public_hex, 14, "hi bob", [["p", BOB.public_hex]])
    pipeline.on_relay_event(dm.to_dict(), RELAY)
    assert [(n.kind, n.recipient, d.device_token) for n, d in collect.sent] == [(1059, BOB.public_hex, "bob-phone")]

    # The endpoint path routes the same way.
    result = pipeline.ingest(trigger(SERVER.public_hex, content_of(_tokens()[:1])).to_dict())
    assert result.accepted
    assert collect.sent[-1][1].device_token == APNS_TOKEN.hex()


def test_a_forged_trigger_is_refused_by_admission() -> None:
    pipeline, _, collect = _setup()
    obj = trigger(SERVER.public_hex, content_of(_tokens())).to_dict()
    obj["sig"] = "00" * 64
    bad = REJECTED.value("bad_signature")
    pipeline.on_relay_event(obj, RELAY)
    assert collect.sent == [] and REJECTED.value("bad_signature") == bad + 1


@pytest.mark.parametrize(
    ("kind", "tags", "content", "result"),
    [
        (14, TAGS, None, "bad_kind"),
        (446, [], None, "bad_tags"),
        (446, [["v", "mip05-v1"]], None, "bad_tags"),
        (446, [["v", "marmot-push-v1"], ["encoding", "base64"]], None, "bad_tags"),
        (446, TAGS, "not base64!", "bad_size"),
        (446, TAGS, "QUJD" * 362, "bad_size"),  # 1086 bytes: not whole chunks
        (446, TAGS, "-_-_" * 362, "bad_base64"),
        (446, TAGS, content_of([padding_chunk() for _ in range(33)]), "bad_size"),
    ],
)
def test_malformed_triggers_are_refused_before_any_chunk_ecdh(
    monkeypatch: pytest.MonkeyPatch, kind: int, tags: list[list[str]], content: str | None, result: str
) -> None:
    opened: list[bytes] = []

    def spy(keys: Keys, chunk: bytes) -> DeviceToken:
        opened.append(chunk)
        return decrypt_chunk(keys, chunk)

    monkeypatch.setattr("pushstr.dialects.marmot.decrypt_chunk", spy)
    pipeline, _, collect = _setup()
    before = _triggers(result)
    wrap = trigger(SERVER.public_hex, content_of(_tokens()) if content is None else content, kind=kind, tags=tags)
    pipeline.on_relay_event(wrap.to_dict(), RELAY)
    assert opened == [] and collect.sent == []
    assert _triggers(result) == before + 1


def test_a_gift_wrap_for_another_key_or_with_a_forged_seal_is_not_a_trigger() -> None:
    _, dialect, collect = _setup()
    before = _triggers("unwrap_failed")
    # p-tagged to the server, but encrypted to somebody else.
    other = trigger(BOB.public_hex, content_of(_tokens()))
    readdressed = sign_event(Keys.generate(), Kind.GIFT_WRAP, other.content, [["p", SERVER.public_hex]])
    dialect.handle(readdressed)
    # A rumor claiming an author other than the seal's.
    sender, claimed = Keys.generate(), Keys.generate()
    rumor = nip59.make_rumor(claimed.public_hex, 446, content_of(_tokens()), TAGS)
    seal = sign_event(sender, Kind.SEAL, nip44.encrypt_to(sender, SERVER.public_hex, rumor.to_json().decode()), ())
    dialect.handle(nip59.gift_wrap(seal, SERVER.public_hex))
    assert collect.sent == [] and _triggers("unwrap_failed") == before + 2


@pytest.mark.parametrize(("offset", "result"), [(-3601, "stale"), (301, "future")])
def test_old_and_future_triggers_are_ignored(offset: int, result: str) -> None:
    _, dialect, collect = _setup()
    before = _triggers(result)
    dialect.handle(trigger(SERVER.public_hex, content_of(_tokens()), created_at=int(time.time()) + offset))
    assert collect.sent == [] and _triggers(result) == before + 1


def test_the_same_content_is_pushed_once_per_dedupe_window() -> None:
    clock = Clock()
    _, dialect, collect = _setup(monotonic=clock)
    content = content_of(_tokens())
    before = _triggers("duplicate")
    dialect.handle(trigger(SERVER.public_hex, content))
    dialect.handle(trigger(SERVER.public_hex, content))  # re-wrapped: another event id, the same content
    assert len(collect.sent) == 3 and _triggers("duplicate") == before + 1
    clock.now += 301
    dialect.handle(trigger(SERVER.public_hex, content))
    assert len(collect.sent) == 6


def test_dedupe_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marmot, "MAX_DEDUPE_ENTRIES", 3)
    clock = Clock()
    _, dialect, _ = _setup(monotonic=clock)
    contents = [content_of([padding_chunk()]) for _ in range(4)]
    for content in contents:
        dialect.handle(trigger(SERVER.public_hex, content))
    duplicates = _triggers("duplicate")
    dialect.handle(trigger(SERVER.public_hex, contents[0]))  # forgotten: the oldest went first
    assert _triggers("duplicate") == duplicates
    dialect.handle(trigger(SERVER.public_hex, contents[3]))
    assert _triggers("duplicate") == duplicates + 1


def test_unwraps_are_limited_globally_before_any_key_agreement(monkeypatch: pytest.MonkeyPatch) -> None:
    unwrapped: list[str] = []
    real = nip59.unwrap

    def spy(keys: Keys, event: Event, *, verify_wrap: bool = True) -> nip59.Unwrapped:
        unwrapped.append(event.id)
        return real(keys, event, verify_wrap=verify_wrap)

    monkeypatch.setattr(nip59, "unwrap", spy)
    clock = Clock()
    _, dialect, collect = _setup(MarmotDialectConfig(unwraps_per_minute=2), monotonic=clock)
    shed = _triggers("shed")
    for _ in range(3):
        dialect.handle(trigger(SERVER.public_hex, content_of(_tokens()[:1])))
    assert len(unwrapped) == 2 and len(collect.sent) == 2 and _triggers("shed") == shed + 1
    clock.now += 30  # half a minute refills one
    dialect.handle(trigger(SERVER.public_hex, content_of(_tokens()[:1])))
    assert len(collect.sent) == 3


def test_each_device_token_has_its_budget() -> None:
    clock = Clock()
    config = MarmotDialectConfig(per_token_per_minute=2, per_token_per_hour=3)
    _, dialect, collect = _setup(config, monotonic=clock)
    limited = _chunks("rate_limited")
    for _ in range(3):  # freshly sealed each time: new chunks, the same device token
        dialect.handle(trigger(SERVER.public_hex, content_of([seal_token(SERVER.public_hex, FCM, FCM_TOKENS[0])])))
    assert len(collect.sent) == 2 and _chunks("rate_limited") == limited + 1
    clock.now += 60  # the minute's budget is back; the hour's has one left
    for _ in range(2):
        dialect.handle(trigger(SERVER.public_hex, content_of([seal_token(SERVER.public_hex, FCM, FCM_TOKENS[0])])))
    assert len(collect.sent) == 3 and _chunks("rate_limited") == limited + 2
    # Another device is not affected.
    dialect.handle(trigger(SERVER.public_hex, content_of([seal_token(SERVER.public_hex, FCM, FCM_TOKENS[1])])))
    assert len(collect.sent) == 4


def test_each_encrypted_token_has_its_budget() -> None:
    """The same sealed chunk replayed in new triggers (new padding, so the dedupe does not see it)."""
    config = MarmotDialectConfig(per_token_per_minute=2, per_token_per_hour=100)
    _, dialect, collect = _setup(config, monotonic=Clock())
    chunk = _tokens()[0]
    limited = _chunks("rate_limited")
    for _ in range(3):
        dialect.handle(trigger(SERVER.public_hex, content_of([chunk, padding_chunk()])))
    assert len(collect.sent) == 2 and _chunks("rate_limited") == limited + 1


def test_a_platform_without_an_app_is_skipped() -> None:
    _, dialect, collect = _setup(apps={Platform.IOS: None, Platform.ANDROID: "log"})
    before = _chunks("no_app")
    dialect.handle(trigger(SERVER.public_hex, content_of(_tokens())))
    assert [device.platform for _, device in collect.sent] == [Platform.ANDROID, Platform.ANDROID]
    assert _chunks("no_app") == before + 1


def test_full_triggers_may_exceed_the_event_limit_only_when_addressed_to_the_server() -> None:
    pipeline, _, collect = _setup()
    chunks = [*_tokens(), *(padding_chunk() for _ in range(29))]
    full = trigger(SERVER.public_hex, content_of(chunks))
    size = len(full.to_json())
    assert 64 * 1024 < size < MAX_TRIGGER_EVENT_BYTES
    pipeline.on_relay_event(full.to_dict(), RELAY, size_checked=False)
    assert len(collect.sent) == 3
    # The built-in endpoint takes one as well (its messages may be up to 128 KiB).
    again = trigger(SERVER.public_hex, content_of([*_tokens(), *(padding_chunk() for _ in range(29))]))
    assert pipeline.ingest(again.to_dict()).accepted
    assert len(collect.sent) == 6

    # Anything else keeps the limit: a gift wrap as large to a user, or a too-large one to the server.
    admission = Admission(AdmissionLimits(64 * 1024, 3 * 24 * 3600), SeenIds(10))
    admission.allow_larger(Kind.GIFT_WRAP, SERVER.public_hex, MAX_TRIGGER_EVENT_BYTES)
    to_bob = sign_event(Keys.generate(), Kind.GIFT_WRAP, full.content, [["p", BOB.public_hex]])
    oversized = sign_event(Keys.generate(), Kind.GIFT_WRAP, "A" * MAX_TRIGGER_EVENT_BYTES, [["p", SERVER.public_hex]])
    note = sign_event(Keys.generate(), 1, full.content, [["p", SERVER.public_hex]])
    for event in (to_bob, oversized, note):
        with pytest.raises(Rejected) as caught:
            admission.screen(event.to_dict())
        assert caught.value.code == "too_large"
    assert admission.screen(full.to_dict()).id == full.id


def test_the_relay_filter_asks_for_gift_wraps_to_the_server() -> None:
    _, dialect, _ = _setup()
    assert list(dialect.relay_filters()) == [{"kinds": [1059], "#p": [SERVER.public_hex]}]
