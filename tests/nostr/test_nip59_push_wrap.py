"""The one-layer wrap a push gateway sends (Amethyst's push server) and the wake-up it wraps instead of a large
event, opened and checked with nostr-sdk."""

from __future__ import annotations

import nostr_sdk
import orjson

from pushstr.nostr import nip59
from pushstr.nostr.event import parse_verified_event


def test_wrap_once_is_a_tagless_1059_whose_content_is_the_event_for_the_recipient() -> None:
    recipient = nostr_sdk.Keys.generate()
    sender = nostr_sdk.Keys.generate()
    event = nostr_sdk.EventBuilder(nostr_sdk.Kind(1), "hello").finalize(sender)
    first = nip59.wrap_once(event.as_json(), recipient.public_key().to_hex(), created_at=1_700_000_000)
    second = nip59.wrap_once(event.as_json(), recipient.public_key().to_hex())
    assert first.pubkey != second.pubkey  # a fresh key each time
    parsed = nostr_sdk.Event.from_json(first.to_json().decode())
    assert parsed.verify() and parsed.kind().as_u16() == 1059 and parsed.tags() == []
    assert parsed.created_at().as_secs() == 1_700_000_000
    plain = nostr_sdk.nip44_decrypt(recipient.secret_key(), parsed.author(), parsed.content())
    assert orjson.loads(plain) == orjson.loads(event.as_json())


def test_wake_up_names_the_event_its_kind_and_its_author() -> None:
    author = nostr_sdk.Keys.generate().public_key().to_hex()
    wake = nip59.wake_up("e" * 64, 1059, author, "wss://relay.example.com/")
    assert parse_verified_event(wake.to_json()) == wake
    assert (wake.kind, wake.content) == (23903, "")
    assert wake.tags == [["e", "e" * 64, "wss://relay.example.com/"], ["k", "1059"], ["p", author]]
    assert wake.pubkey != author
    assert nip59.wake_up("e" * 64, 4, None, None).tags == [["e", "e" * 64], ["k", "4"]]
