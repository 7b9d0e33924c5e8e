"""Reading 0xchat's settings: which push service a `deviceId` names, and the `#e` / `authors` entries kept."""

from __future__ import annotations

import pytest

from pushstr.dialects.push_settings_message import Device, Message, read_authors, read_device_id, read_groups
from pushstr.registry.model import NO_AUTHORS, Platform

APNS_TOKEN = "5f" * 32
BUNDLE = "com.oxchat.nostr"


@pytest.mark.parametrize(
    ("device_id", "topics", "expected"),
    [
        # The open-source iOS build has an empty bundle id: the deviceId is the bare APNs token.
        (APNS_TOKEN, (), Device(Platform.IOS, APNS_TOKEN)),
        (BUNDLE + APNS_TOKEN, (), Device(Platform.IOS, APNS_TOKEN, BUNDLE)),
        (BUNDLE + APNS_TOKEN, (BUNDLE,), Device(Platform.IOS, APNS_TOKEN, BUNDLE)),
        # A bundle id ending in hex letters is only told apart from the token by a configured topic ...
        ("com.example.cafe" + APNS_TOKEN, ("com.example.cafe",), Device(Platform.IOS, APNS_TOKEN, "com.example.cafe")),
        # ... without one, an odd run gives its first character back to the bundle id.
        ("com.example.c" + APNS_TOKEN, (), Device(Platform.IOS, APNS_TOKEN, "com.example.c")),
        (
            "https://up.example.com/UP?token=abc",
            (),
            Device(Platform.UNIFIEDPUSH, "https://up.example.com/UP?token=abc"),
        ),
        ("http://127.0.0.1:8080/up/xyz", (), Device(Platform.UNIFIEDPUSH, "http://127.0.0.1:8080/up/xyz")),
        (
            "fcm:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8",
            (),
            Device(Platform.ANDROID, "fcm:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8"),
        ),
        ("ab" * 31, (), Device(Platform.ANDROID, "ab" * 31)),  # too short for an APNs token
    ],
)
def test_device_ids(device_id: str, topics: tuple[str, ...], expected: Device) -> None:
    assert read_device_id(device_id, topics) == expected


def test_groups_keep_channels_and_relay_groups_and_count_the_rest() -> None:
    channel = "ab" * 32
    entries = [channel, channel.upper(), "groups.0xchat.com'abc123", "Groups.0xchat.com:443'abc123", "???", 7, None]
    read = read_groups(entries, limit=10)
    assert read.values == (channel, "groups.0xchat.com'abc123")
    assert read.ignored == {"invalid": 3}
    limited = read_groups(["aa" * 32, "bb" * 32, "cc" * 32], limit=2)
    assert limited.values == ("aa" * 32, "bb" * 32) and limited.ignored == {"limit": 1}


def test_authors_drop_bad_entries_and_a_list_over_the_limit_narrows_nothing() -> None:
    contacts = [f"{n:064x}" for n in range(3000)]
    authors, ignored = read_authors([*contacts, "not a key"], limit=10_000)
    assert len(authors) == 3000 and ignored == {"invalid": 1}
    assert read_authors(contacts, limit=100) == (NO_AUTHORS, {"over_limit": 1})
    assert read_authors([], limit=10) == (NO_AUTHORS, {})
    assert read_authors(None, limit=10) == (NO_AUTHORS, {})


def test_messages_as_0xchat_sends_them() -> None:
    settings = Message.model_validate(
        {"authors": [], "kinds": [], "deviceId": APNS_TOKEN, "relays": ["wss://relay.0xchat.com"], "#e": [], "#p": []}
    )
    assert settings.kinds == [] and settings.online is None and settings.platform is None
    assert Message.model_validate({"online": 1}).online == 1
    assert Message.model_validate({"online": True}).online == 1
    assert Message.model_validate({"kinds": [4], "deviceId": "x", "platform": "iOS"}).platform is Platform.IOS
