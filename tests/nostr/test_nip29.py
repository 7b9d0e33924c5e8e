"""NIP-29 group entries as 0xchat writes them (`RelayGroupDBISAR.identifier`: the relay URL's host, `'`, the id)."""

from __future__ import annotations

import pytest

from pushstr.nostr.nip29 import group_host, group_id_of, group_key, is_group_key, parse_group, relay_host, relay_url


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("groups.0xchat.com'abc123", ("groups.0xchat.com", "abc123")),
        ("Groups.0xchat.com'abc123", ("groups.0xchat.com", "abc123")),
        ("relay.example.com:4848'pizza", ("relay.example.com:4848", "pizza")),
        ("relay.example.com:443'pizza", ("relay.example.com", "pizza")),
        ("wss://relay.example.com'pizza", ("relay.example.com", "pizza")),
        ("127.0.0.1:7777'chess", ("127.0.0.1:7777", "chess")),
        # Split at the first apostrophe, as 0xchat's `(.*?)'(.*)` does: the id may hold more of them.
        ("relay.example.com'it's", ("relay.example.com", "it's")),
    ],
)
def test_group_entries(entry: str, expected: tuple[str, str]) -> None:
    assert parse_group(entry) == expected


@pytest.mark.parametrize(
    "entry",
    [
        "ab" * 32,
        "no-apostrophe",
        "'pizza",
        "relay.example.com'",
        "bad host'pizza",
        "relay.example.com'two words",
        "user@relay.example.com'pizza",
        "relay.example.com:99999'pizza",
        "ftp://relay.example.com'pizza",
    ],
)
def test_entries_that_are_not_groups(entry: str) -> None:
    assert parse_group(entry) is None


def test_keys_and_relays() -> None:
    key = group_key("relay.example.com", "pizza")
    assert key == "relay.example.com'pizza" and is_group_key(key) and not is_group_key("ab" * 32)
    assert (group_host(key), group_id_of(group_key("relay.example.com", "it's"))) == ("relay.example.com", "it's")
    assert relay_url("relay.example.com:4848") == "wss://relay.example.com:4848"
    assert relay_host("ws://relay.example.com:80/") == "relay.example.com"
    assert relay_host("wss://[::1]:7777") == "[::1]:7777"
    assert relay_host("https://relay.example.com") is None
