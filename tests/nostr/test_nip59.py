"""NIP-59 gift wraps: the NIP-59 and NIP-17 examples, forgeries, and nostr-sdk both ways."""

from __future__ import annotations

import time
from typing import Any

import nostr_sdk
import orjson
import pytest
from hypothesis import given, settings

from pushstr.nostr import nip44, nip59
from pushstr.nostr.errors import DecryptError, InvalidEvent
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from tests.conftest import load_vector
from tests.nostr.strategies import CONTENT, SECRETS, TAGS, sdk_tags

NIP59 = load_vector("nip59-example.json")
NIP17 = load_vector("nip17-example.json")


def test_nip59_example_unwraps_to_exact_rumor() -> None:
    unwrapped = nip59.unwrap(Keys.from_hex(NIP59["keys"]["recipient_sec"]), Event.from_dict(NIP59["gift_wrap"]))
    assert unwrapped.rumor.to_dict() == NIP59["rumor"]
    assert unwrapped.seal.to_dict() == NIP59["seal"]


@pytest.mark.parametrize("wrap", NIP17["gift_wraps"], ids=lambda wrap: wrap["addressed_to"])
def test_nip17_examples_unwrap(wrap: dict[str, Any]) -> None:
    keys = Keys.from_hex(NIP17[wrap["addressed_to"]]["sec"])
    unwrapped = nip59.unwrap(keys, Event.from_dict(wrap["event"]))
    assert unwrapped.rumor.to_dict() == orjson.loads(wrap["derived_by_decryption"]["rumor_plaintext_json"])
    assert unwrapped.rumor.pubkey == NIP17["sender"]["pub"]
    assert unwrapped.rumor.content == "Hola, que tal?"


def test_wrong_recipient_cannot_unwrap() -> None:
    with pytest.raises(DecryptError):
        nip59.unwrap(Keys.generate(), Event.from_dict(NIP59["gift_wrap"]))


def test_wrap_layers_and_backdating() -> None:
    sender, recipient = Keys.generate(), Keys.generate()
    before = int(time.time())
    wrap = nip59.wrap(sender, recipient.public_hex, 14, "hi", [["p", recipient.public_hex]], created_at=before)
    assert wrap.kind == 1059 and wrap.p_tags == [recipient.public_hex] and wrap.pubkey != sender.public_hex
    assert before - nip59.MAX_BACKDATE_SECONDS <= wrap.created_at <= int(time.time())
    unwrapped = nip59.unwrap(recipient, wrap)
    assert unwrapped.rumor.created_at == before
    assert unwrapped.seal.tags == [] and unwrapped.seal.pubkey == sender.public_hex
    assert before - nip59.MAX_BACKDATE_SECONDS <= unwrapped.seal.created_at <= int(time.time())


def _wrap_seal(seal_event: Event, recipient: Keys) -> Event:
    return nip59.gift_wrap(seal_event, recipient.public_hex)


def test_seal_author_must_match_rumor() -> None:
    impostor, victim, recipient = Keys.generate(), Keys.generate(), Keys.generate()
    rumor = nip59.make_rumor(victim.public_hex, 14, "I owe you")
    payload = nip44.encrypt_to(impostor, recipient.public_hex, rumor.to_json().decode())
    forged_seal = sign_event(impostor, 13, payload)
    with pytest.raises(InvalidEvent, match="authors differ"):
        nip59.unwrap(recipient, _wrap_seal(forged_seal, recipient))
    with pytest.raises(InvalidEvent, match="sender"):
        nip59.seal(impostor, recipient.public_hex, rumor)


def test_bad_seal_signature_and_kind_and_rumor_id() -> None:
    sender, recipient = Keys.generate(), Keys.generate()
    rumor = nip59.make_rumor(sender.public_hex, 14, "x")
    good = nip59.seal(sender, recipient.public_hex, rumor)
    bad_sig = Event.from_dict({**good.to_dict(), "sig": sign_event(sender, 13, "other").sig})
    with pytest.raises(InvalidEvent, match="bad signature"):
        nip59.unwrap(recipient, _wrap_seal(bad_sig, recipient))
    not_a_seal = sign_event(sender, 1, good.content)
    with pytest.raises(InvalidEvent, match="seal"):
        nip59.unwrap(recipient, _wrap_seal(not_a_seal, recipient))
    wrong_id = {**rumor.to_dict(), "id": "0" * 64}
    bad_rumor_seal = sign_event(
        sender, 13, nip44.encrypt_to(sender, recipient.public_hex, orjson.dumps(wrong_id).decode())
    )
    with pytest.raises(InvalidEvent, match="rumor id"):
        nip59.unwrap(recipient, _wrap_seal(bad_rumor_seal, recipient))
    with pytest.raises(InvalidEvent, match="kind 1059"):
        nip59.unwrap(recipient, good)


def test_forged_wrap_signature_is_rejected_unless_already_verified() -> None:
    sender, recipient = Keys.generate(), Keys.generate()
    wrap = nip59.wrap(sender, recipient.public_hex, 14, "x")
    forged = Event.from_dict({**wrap.to_dict(), "sig": "0" * 128})
    with pytest.raises(InvalidEvent, match="bad signature"):
        nip59.unwrap(recipient, forged)
    assert nip59.unwrap(recipient, forged, verify_wrap=False).rumor.content == "x"


def test_rumor_without_id_gets_one() -> None:
    rumor = nip59.parse_rumor(b'{"pubkey":"' + b"a" * 64 + b'","created_at":1,"kind":14,"tags":[],"content":""}')
    assert rumor == nip59.make_rumor("a" * 64, 14, "", created_at=1)
    with pytest.raises(InvalidEvent, match="unknown rumor field"):
        nip59.parse_rumor(orjson.dumps({**rumor.to_dict(), "sig": "00"}))


@settings(max_examples=40, deadline=None)
@given(SECRETS, SECRETS, CONTENT, TAGS)
def test_against_nostr_sdk_both_ways(secret_a: bytes, secret_b: bytes, content: str, tags: list[list[str]]) -> None:
    alice, bob = Keys(secret_a), Keys(secret_b)
    sdk_alice, sdk_bob = nostr_sdk.Keys.parse(secret_a.hex()), nostr_sdk.Keys.parse(secret_b.hex())

    ours = nip59.wrap(alice, bob.public_hex, 14, content, tags, created_at=1_700_000_000)
    opened = nostr_sdk.UnwrappedGift.from_gift_wrap(sdk_bob, nostr_sdk.Event.from_json(ours.to_json().decode()))
    assert opened.sender().to_hex() == alice.public_hex
    assert orjson.loads(opened.rumor().as_json()) == nip59.unwrap(bob, ours).rumor.to_dict()

    unsigned = (
        nostr_sdk.EventBuilder(nostr_sdk.Kind(14), content)
        .tags(sdk_tags(tags))
        .finalize_unsigned(sdk_alice.public_key())
    )
    theirs = nostr_sdk.nip59_make_gift_wrap(sdk_alice, sdk_bob.public_key(), unsigned)
    unwrapped = nip59.unwrap(bob, Event.from_dict(orjson.loads(theirs.as_json())))
    assert unwrapped.rumor.pubkey == alice.public_hex
    assert unwrapped.rumor.content == content
    assert orjson.loads(unsigned.as_json())["tags"] == unwrapped.rumor.tags
