"""The preferences stage inside the real pipeline: toggles, mutes, follows-only, hellthreads, zap threshold, thread
following and quiet hours, each with the event that must pass beside the one that must not."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from prometheus_client import REGISTRY

from pushstr.config import LogAppConfig
from pushstr.engine.admission import Admission, AdmissionLimits
from pushstr.engine.dedupe import SeenIds
from pushstr.engine.lists import UserLists
from pushstr.engine.pipeline import Pipeline
from pushstr.engine.policy import SUPPRESSED, MemoryHolds, PolicyStage
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from pushstr.registry.preferences import (
    DEFAULT,
    PreferenceBook,
    Preferences,
    QuietAction,
    QuietHours,
    mutes_from_tags,
)
from pushstr.registry.storage import HeldPush
from pushstr.relays.discovery import author_filters
from pushstr.transports.base import Notification

ALICE, BOB, CAROL = Keys.generate(), Keys.generate(), Keys.generate()
KINDS = frozenset({1, 4, 6, 7, 9735, 1059})


class MemoryStorage:
    """The book's storage in a dict (the SQL store is tested in tests/store)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], bytes] = {}

    async def save_preferences(self, pubkey: str, device_token: str, preferences: bytes) -> None:
        self.rows[(pubkey, device_token)] = preferences

    async def delete_preferences(self, pubkey: str, device_token: str) -> bool:
        return self.rows.pop((pubkey, device_token), None) is not None

    async def load_preferences(self) -> list[tuple[str, str, bytes]]:
        return [(p, t, v) for (p, t), v in self.rows.items()]


class Collect:
    def __init__(self) -> None:
        self.sent: list[tuple[Notification, Registration]] = []

    def submit(self, notification: Notification, device: Registration) -> bool:
        self.sent.append((notification, device))
        return True

    def kinds(self) -> list[int]:
        return [n.kind for n, _ in self.sent]


class Handled:
    def record(self, event_id: str) -> None:
        pass


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class World:
    """Bob's phone (and Carol's) behind a real pipeline with the preferences stage."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.bob = Registration(BOB.public_hex, "bob-phone", Platform.IOS, "app", kinds=KINDS)
        self.carol = Registration(CAROL.public_hex, "carol-phone", Platform.IOS, "app", kinds=KINDS)
        self.devices = {BOB.public_hex: (self.bob,), CAROL.public_hex: (self.carol,)}
        self.book = PreferenceBook(MemoryStorage())
        self.lists = UserLists(author_filters)
        self.book.subscribe(lambda: self.lists.want(self.book.list_users))
        self.collect = Collect()
        self.clock = Clock(now)
        self.stage = PolicyStage(self.book, self.lists, self.devices_for, self.collect.submit, clock=self.clock)
        self.pipeline = Pipeline(
            Admission(AdmissionLimits(65536, 3600, ageless_kinds=frozenset({3, 10000})), SeenIds(1000)),
            self.devices_for,
            self.collect,
            {"app": LogAppConfig()},
            Handled(),
            preferences=self.stage,
        )
        self.pipeline.add_kind_handler(3, self.lists.on_list)
        self.pipeline.add_kind_handler(10000, self.lists.on_list)

    def devices_for(self, pubkey: str) -> Sequence[Registration]:
        return self.devices.get(pubkey, ())

    async def prefer(self, preferences: Preferences, device: Registration | None = None) -> None:
        device = device or self.bob
        await self.book.put(device.pubkey, device.device_token, preferences)

    def send(self, event: Event) -> int:
        return self.pipeline.ingest(event.to_dict()).notified


def _to(keys: Keys, recipient: Keys, kind: int = 1, content: str = "hi", tags: list[list[str]] | None = None) -> Event:
    return sign_event(keys, kind, content, [["p", recipient.public_hex], *(tags or [])])


def _zap(sats: int) -> Event:
    request = sign_event(ALICE, 9734, "", [["p", BOB.public_hex], ["amount", str(sats * 1000)]])
    tags = [
        ["p", BOB.public_hex],
        ["bolt11", f"lnbc{sats * 10}n1pjexample"],
        ["description", request.to_json().decode()],
    ]
    return sign_event(Keys.generate(), 9735, "", tags)


async def test_without_preferences_the_matches_pass_unchanged() -> None:
    world = World()
    for kind in (1, 4, 7, 6, 9735):
        assert world.send(_to(ALICE, BOB, kind)) == 1
    assert len(world.stage.select(_to(ALICE, BOB), [])) == 0


async def test_a_reaction_is_suppressed_when_reactions_are_off_and_a_mention_still_passes() -> None:
    world = World()
    await world.prefer(Preferences(reactions=False))
    before = SUPPRESSED.value("kind")
    assert world.send(_to(ALICE, BOB, 7, "+")) == 0
    assert world.send(_to(ALICE, BOB, 1, "hello")) == 1
    assert SUPPRESSED.value("kind") == before + 1


async def test_replies_and_mentions_are_told_apart_by_e_tags() -> None:
    world = World()
    await world.prefer(Preferences(replies=False))
    assert world.send(_to(ALICE, BOB, 1, "a reply", [["e", "a" * 64, "", "root"]])) == 0
    assert world.send(_to(ALICE, BOB, 1, "a mention")) == 1


async def test_the_public_mute_list_silences_a_pubkey_a_word_a_hashtag_and_a_thread() -> None:
    world = World()
    await world.prefer(Preferences(mute_list=True))
    muted_thread = "b" * 64
    mute_list = sign_event(
        BOB, 10000, "", [["p", ALICE.public_hex], ["word", "Crypto"], ["t", "NSFW"], ["e", muted_thread]]
    )
    world.send(mute_list)
    assert world.send(_to(ALICE, BOB, 4, "ciphertext")) == 0  # a DM from a muted pubkey
    assert world.send(_to(CAROL, BOB, 1, "all about CRYPTO today")) == 0
    assert world.send(_to(CAROL, BOB, 1, "look", [["t", "nsfw"]])) == 0
    assert world.send(_to(CAROL, BOB, 1, "reply", [["e", muted_thread]])) == 0
    assert world.send(_to(CAROL, BOB, 1, "cryptography is a different word")) == 1


async def test_an_older_mute_list_changes_nothing_and_a_newer_one_replaces_it() -> None:
    world = World()
    await world.prefer(Preferences(mute_list=True))
    world.send(sign_event(BOB, 10000, "", [["p", ALICE.public_hex]], created_at=2000))
    world.send(sign_event(BOB, 10000, "", [], created_at=1000))
    assert world.send(_to(ALICE, BOB)) == 0
    world.send(sign_event(BOB, 10000, "", [["p", CAROL.public_hex]], created_at=3000))
    assert world.send(_to(ALICE, BOB, 1, "again")) == 1


async def test_mute_lists_are_read_only_for_users_whose_device_asks() -> None:
    world = World()
    world.send(sign_event(BOB, 10000, "", [["p", ALICE.public_hex]]))
    assert BOB.public_hex not in world.lists.mutes
    assert world.send(_to(ALICE, BOB)) == 1


async def test_private_mutes_handed_over_silence_too() -> None:
    world = World()
    await world.prefer(Preferences(private_mutes=mutes_from_tags([["p", ALICE.public_hex], ["word", "secret plan"]])))
    assert world.send(_to(ALICE, BOB)) == 0
    assert world.send(_to(CAROL, BOB, 1, "the Secret   plan is on")) == 0
    assert world.send(_to(CAROL, BOB, 1, "the plan is secret")) == 1


async def test_follows_only_passes_a_followed_author_and_blocks_a_stranger() -> None:
    world = World()
    await world.prefer(Preferences(follows_only=True))
    assert world.send(_to(ALICE, BOB)) == 0  # no kind 3 seen yet: nobody is followed
    world.send(sign_event(BOB, 3, "", [["p", ALICE.public_hex, "wss://relay.example"]]))
    assert world.send(_to(ALICE, BOB, 1, "again")) == 1
    assert world.send(_to(CAROL, BOB)) == 0
    assert world.lists.filters()[0]["kinds"] == [3, 10000]
    assert world.lists.filters()[0]["authors"] == [BOB.public_hex]


async def test_a_note_tagging_more_pubkeys_than_the_limit_is_silent() -> None:
    world = World()
    await world.prefer(Preferences(hellthread_limit=10))
    others = [["p", Keys.generate().public_hex] for _ in range(11)]
    assert world.send(_to(ALICE, BOB, 1, "hellthread", others)) == 0  # 12 pubkeys
    assert world.send(_to(ALICE, BOB, 1, "small thread", others[:9])) == 1  # 10 pubkeys
    assert world.send(_to(ALICE, BOB, 4, "a DM is never a hellthread", others)) == 1


async def test_a_zap_under_the_threshold_is_silent() -> None:
    world = World()
    await world.prefer(Preferences(zap_min_sats=21))
    assert world.send(_zap(10)) == 0
    assert world.send(_zap(21)) == 1


async def test_a_reply_in_a_thread_the_user_was_notified_about_reaches_them_without_a_p_tag() -> None:
    world = World()
    await world.prefer(Preferences(thread_following=True))
    note = _to(ALICE, BOB, 1, "what do you think?")
    assert world.send(note) == 1
    reply = sign_event(CAROL, 1, "I agree", [["e", note.id, "", "root"], ["p", ALICE.public_hex]])
    assert world.send(reply) == 1
    assert world.collect.sent[-1][1] is world.bob
    own = sign_event(BOB, 1, "my own reply", [["e", note.id, "", "root"]])
    assert world.send(own) == 0  # never the author


async def test_threads_are_followed_only_by_devices_that_turned_it_on() -> None:
    world = World()
    await world.prefer(Preferences(reactions=False))  # preferences, but no thread following
    note = _to(ALICE, BOB)
    assert world.send(note) == 1
    assert world.send(sign_event(CAROL, 1, "reply", [["e", note.id]])) == 0


async def test_thread_memory_is_bounded_and_expires() -> None:
    world = World()
    await world.prefer(Preferences(thread_following=True))
    stage = PolicyStage(
        world.book,
        world.lists,
        world.devices_for,
        world.collect.submit,
        clock=world.clock,
        thread_memory=2,
        thread_ttl=60,
    )
    world.pipeline._preferences = stage
    notes = [_to(ALICE, BOB, 1, f"note {n}") for n in range(3)]
    for note in notes:
        world.send(note)
    assert world.send(sign_event(CAROL, 1, "reply", [["e", notes[0].id]])) == 0  # forgotten: memory of two
    assert world.send(sign_event(CAROL, 1, "reply", [["e", notes[2].id]])) == 1
    world.clock.now += 61
    assert world.send(sign_event(CAROL, 1, "late reply", [["e", notes[2].id]])) == 0


def _at(hour: int, minute: int = 0, zone: str = "Europe/Berlin") -> float:
    return datetime(2026, 1, 15, hour, minute, tzinfo=ZoneInfo(zone)).timestamp()


async def test_pushes_inside_quiet_hours_arrive_as_one_summary_when_the_window_ends() -> None:
    world = World(now=_at(23, 30))
    await world.prefer(Preferences(quiet_hours=QuietHours("Europe/Berlin", 22 * 60, 7 * 60)))
    assert world.send(_to(ALICE, BOB, 4)) == 0
    assert world.send(_to(CAROL, BOB, 1)) == 0
    world.clock.now = _at(3)
    assert world.send(_to(CAROL, BOB, 7)) == 0
    assert world.collect.sent == []
    assert await world.stage.release_due() == 0  # the window has not ended
    world.clock.now = _at(7, 0) + 86400
    assert await world.stage.release_due() == 1
    ((summary, device),) = world.collect.sent
    assert device is world.bob and summary.count == 3 and summary.extra == {"mixed": "1"}
    assert world.send(_to(ALICE, BOB, 4, "morning")) == 1  # outside the window again


async def test_quiet_hours_can_drop_instead() -> None:
    world = World(now=_at(12))
    await world.prefer(Preferences(quiet_hours=QuietHours("Europe/Berlin", 11 * 60, 13 * 60, QuietAction.DROP)))
    assert world.send(_to(ALICE, BOB)) == 0
    world.clock.now = _at(14)
    assert await world.stage.release_due() == 0 and world.collect.sent == []


@pytest.mark.parametrize(
    ("start", "end", "hour", "ends"),
    [
        ("22:00", "07:00", 23, (1, 16, 7)),
        ("22:00", "07:00", 6, (0, 15, 7)),
        ("22:00", "07:00", 12, None),
        ("09:00", "17:00", 10, (0, 15, 17)),
        ("09:00", "17:00", 17, None),
    ],
)
def test_quiet_hours_windows(start: str, end: str, hour: int, ends: tuple[int, int, int] | None) -> None:
    from pushstr.registry.preferences import parse_clock

    quiet = QuietHours("America/New_York", parse_clock(start), parse_clock(end))
    got = quiet.ends_at(_at(hour, zone="America/New_York"))
    if ends is None:
        assert got is None
    else:
        _, day, end_hour = ends
        assert got == datetime(2026, 1, day, end_hour, tzinfo=ZoneInfo("America/New_York")).timestamp()


def test_quiet_hours_refuse_unknown_zones_and_empty_windows() -> None:
    with pytest.raises(ValueError, match="time zone"):
        QuietHours("Mars/Olympus", 0, 60)
    with pytest.raises(ValueError, match="not equal"):
        QuietHours("UTC", 60, 60)


def test_preferences_survive_their_stored_form() -> None:
    prefs = Preferences(
        reactions=False,
        follows_only=True,
        hellthread_limit=10,
        zap_min_sats=21,
        thread_following=True,
        mute_list=True,
        private_mutes=mutes_from_tags([["p", ALICE.public_hex], ["t", "#Bitcoin"], ["word", "two words"]]),
        quiet_hours=QuietHours("Europe/Berlin", 1320, 420, QuietAction.DROP),
    )
    assert Preferences.from_json(prefs.to_json()) == prefs
    assert Preferences.from_json(DEFAULT.to_json()) == DEFAULT
    assert Preferences.from_json(orjson.dumps({"reactions": "no", "later_field": 1})) == DEFAULT


def test_mute_lists_are_bounded_and_skip_malformed_tags() -> None:
    tags: list[Any] = [
        ["p", "not hex"],
        ["e"],
        "junk",
        ["t", ""],
        *(["p", Keys.generate().public_hex] for _ in range(5)),
    ]
    mutes = mutes_from_tags(tags, limit=3)
    assert len(mutes) == 3 and not mutes.events and not mutes.hashtags


async def test_the_book_stores_first_and_drops_rows_of_devices_gone() -> None:
    storage = MemoryStorage()
    book = PreferenceBook(storage)
    await book.put(BOB.public_hex, "bob-phone", Preferences(thread_following=True))
    await book.put(CAROL.public_hex, "carol-phone", Preferences(follows_only=True))
    assert set(book.thread_followers) == {BOB.public_hex} and book.list_users == {CAROL.public_hex}
    reloaded = PreferenceBook(storage)
    assert await reloaded.load(lambda pubkey, token: pubkey == BOB.public_hex) == 1
    assert reloaded.get(BOB.public_hex, "bob-phone").thread_following
    assert (CAROL.public_hex, "carol-phone") not in storage.rows
    await reloaded.put(BOB.public_hex, "bob-phone", DEFAULT)  # the defaults are no row at all
    assert storage.rows == {} and not reloaded.thread_followers


async def test_followed_threads_are_what_relays_are_asked_for_until_they_expire() -> None:
    world = World()
    told: list[None] = []
    stage = PolicyStage(
        world.book,
        world.lists,
        world.devices_for,
        world.collect.submit,
        clock=world.clock,
        thread_ttl=60,
        on_threads=lambda: told.append(None),
    )
    world.pipeline._preferences = stage
    assert stage.thread_interest() == {}
    world.send(_to(ALICE, BOB))  # no device follows threads: nothing remembered
    await world.prefer(Preferences(thread_following=True))
    note = _to(ALICE, BOB, 1, "followed")
    world.send(note)
    assert told == [None]
    ((kinds, ids),) = stage.thread_interest().items()
    assert ids == {note.id} and 1 in kinds and 7 in kinds
    world.clock.now += 61
    assert stage.thread_interest() == {}


class FailingOnce(MemoryHolds):
    """A store whose next write fails, as a database that went away for a moment."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = True

    async def add_held(self, holds: Collection[HeldPush]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database unavailable")
        await super().add_held(holds)


def _quiet_world(store: MemoryHolds) -> World:
    world = World(now=_at(23, 30))
    world.stage = PolicyStage(
        world.book, world.lists, world.devices_for, world.collect.submit, clock=world.clock, store=store
    )
    world.pipeline._preferences = world.stage
    return world


async def test_a_summary_survives_a_restart_and_two_instances_send_one() -> None:
    store = MemoryHolds()
    first, second = _quiet_world(store), _quiet_world(store)
    for world in (first, second):
        await world.prefer(Preferences(quiet_hours=QuietHours("Europe/Berlin", 22 * 60, 7 * 60)))
    assert first.send(_to(ALICE, BOB, 4)) == 0
    assert first.send(_to(CAROL, BOB, 4)) == 0
    await first.stage.stop()  # a stop writes what was held; the process may go now
    assert second.send(_to(ALICE, BOB, 7)) == 0  # the shard moved: the other instance holds the next one
    for world in (first, second):
        world.clock.now = _at(7, 0) + 86400
    assert await second.stage.release_due() == 1
    assert await first.stage.release_due() == 0, "the row was taken: no second summary"
    ((summary, device),) = second.collect.sent
    assert device is second.bob and summary.count == 3 and summary.extra == {"mixed": "1"}


async def test_holds_the_store_refused_are_written_with_the_next_flush() -> None:
    store = FailingOnce()
    world = _quiet_world(store)
    await world.prefer(Preferences(quiet_hours=QuietHours("Europe/Berlin", 22 * 60, 7 * 60)))
    failures = REGISTRY.get_sample_value("pushstr_quiet_hours_store_failures_total") or 0.0
    assert world.send(_to(ALICE, BOB, 4)) == 0
    assert not await world.stage.flush()
    assert world.send(_to(CAROL, BOB, 4)) == 0  # held while the store was away
    assert await world.stage.flush()
    assert REGISTRY.get_sample_value("pushstr_quiet_hours_store_failures_total") == failures + 1
    world.clock.now = _at(7, 0) + 86400
    assert await world.stage.release_due() == 1
    ((summary, _device),) = world.collect.sent
    assert summary.count == 2
