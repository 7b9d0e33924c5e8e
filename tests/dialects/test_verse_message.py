"""Reading Verse control events: tags, NIP-44 content, tokens and filters, and what a filter must be to be kept.
Events are built as the reference client builds them (tests/dialects/verse_client.py)."""

from __future__ import annotations

import time
from typing import Any

import nostr_sdk
import orjson
import pytest

from pushstr.config import VERSE_FILTER_KINDS
from pushstr.dialects.base import Refused
from pushstr.dialects.verse_message import (
    check_subscribable,
    narrowing_field,
    open_content,
    read_envelope,
    read_filter,
    read_token,
    stored_filter,
)
from pushstr.nostr.keys import Keys
from tests.dialects.verse_client import (
    FCM_TOKEN,
    REGISTER,
    UPSERT,
    as_event,
    pushstr_event,
    sdk_keys,
    verse_event,
)

SERVER = Keys.generate()
ME = "ab" * 32


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(Refused) as caught:
        call(*args)
    return caught.value.result


def test_the_reference_clients_registration_reads_back() -> None:
    user = nostr_sdk.Keys.generate()
    event = as_event(verse_event(user, SERVER.public_hex, REGISTER, {"token": f"  {FCM_TOKEN}\n"}, app="universes"))
    now = time.time()
    envelope = read_envelope(event, SERVER.public_hex, now)
    assert envelope.app == "universes" and envelope.expiration is not None and envelope.expiration > now
    assert read_token(open_content(SERVER, event, 10_000)) == FCM_TOKEN  # trimmed, as the reference trims it


def test_pushstrs_own_nip44_and_signature_read_the_same() -> None:
    user = Keys.generate()
    event = pushstr_event(user, SERVER.public_hex, REGISTER, {"token": FCM_TOKEN}, app="peek")
    event.verify()
    assert read_envelope(event, SERVER.public_hex, time.time()).app == "peek"
    assert read_token(open_content(SERVER, event, 10_000)) == FCM_TOKEN
    # nostr-sdk opens what pushstr encrypted: the two NIP-44 implementations agree.
    opened = nostr_sdk.nip44_decrypt(
        sdk_keys(SERVER).secret_key(), nostr_sdk.PublicKey.parse(user.public_hex), event.content
    )
    assert orjson.loads(opened) == {"token": FCM_TOKEN}


def test_tags_decide_whether_an_event_is_for_us() -> None:
    user = nostr_sdk.Keys.generate()
    now = int(time.time())

    def envelope_of(**options: Any) -> Any:
        return read_envelope(
            as_event(verse_event(user, SERVER.public_hex, REGISTER, {}, **options)), SERVER.public_hex, now
        )

    assert envelope_of(app=None, expiration=None).app == "default"
    assert envelope_of(expiration=None).expiration is None
    with pytest.raises(Refused) as caught:
        envelope_of(p=None)
    assert caught.value.result == "missing_tag"
    with pytest.raises(Refused) as caught:
        envelope_of(p="cd" * 32)
    assert caught.value.result == "not_for_us"
    with pytest.raises(Refused) as caught:
        envelope_of(expiration=now - 1)
    assert caught.value.result == "expired"
    for bad in ("soon", "-5", "１２３", "9" * 13):
        with pytest.raises(Refused) as caught:
            envelope_of(expiration=bad)
        assert caught.value.result == "malformed"


def test_content_must_be_nip44_to_the_server() -> None:
    user = nostr_sdk.Keys.generate()
    plain = nostr_sdk.EventBuilder(nostr_sdk.Kind(REGISTER), orjson.dumps({"token": FCM_TOKEN}).decode())
    assert refused(open_content, SERVER, as_event(plain.finalize(user)), 10_000) == "not_encrypted"
    nip04 = nostr_sdk.nip04_encrypt(user.secret_key(), nostr_sdk.PublicKey.parse(SERVER.public_hex), "{}")
    as_nip04 = as_event(nostr_sdk.EventBuilder(nostr_sdk.Kind(REGISTER), nip04).finalize(user))
    assert refused(open_content, SERVER, as_nip04, 10_000) == "not_encrypted"
    to_someone_else = as_event(verse_event(user, Keys.generate().public_hex, REGISTER, {"token": FCM_TOKEN}))
    assert refused(open_content, SERVER, to_someone_else, 10_000) == "undecryptable"
    large = as_event(verse_event(user, SERVER.public_hex, REGISTER, {"token": "x" * 5000}))
    assert refused(open_content, SERVER, large, 4096) == "too_large"


@pytest.mark.parametrize(
    "text", ["not json", "[]", '"token"', "{}", '{"token": ""}', '{"token": "   "}', '{"token": 7}']
)
def test_a_registration_without_a_token_is_bad_json(text: str) -> None:
    assert refused(read_token, text) == "bad_json"


def payload(filter_: Any) -> str:
    return orjson.dumps({"filter": filter_}).decode()


def test_a_filter_is_known_by_its_canonical_form() -> None:
    first = read_filter(payload({"kinds": [9735, 1, 7], "#p": [ME]}), 4096)
    again = read_filter(payload({"#p": [ME, ME], "limit": 20, "since": 5, "kinds": [7, 1, 9735, 1]}), 4096)
    assert first.filter_id == again.filter_id and first.canonical == again.canonical
    assert first.canonical == f'{{"#p":["{ME}"],"kinds":[1,7,9735]}}'
    assert again.filter.since is None and again.filter.limit is None
    other = read_filter(payload({"kinds": [1, 7], "#p": [ME]}), 4096)
    assert other.filter_id != first.filter_id
    assert stored_filter(first.canonical) == first


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("nope", "bad_json"),
        ('{"filters": {}}', "bad_filter"),
        (payload({}), "bad_filter"),
        (payload([1]), "bad_filter"),
        (payload({"kinds": [1], "search": "x"}), "bad_filter"),
        (payload({"kinds": ["1"]}), "bad_filter"),
        (payload({"authors": ["npub1"]}), "bad_filter"),
        (payload({"kinds": [1], "#t": ["x" * 5000]}), "bad_filter"),
        (payload({"kinds": [1], "#t": [f"tag{i}" for i in range(500)]}), "too_large"),
    ],
)
def test_what_is_not_a_filter_is_refused(text: str, result: str) -> None:
    assert refused(read_filter, text, 4096) == result


@pytest.mark.parametrize(
    ("filter_", "result"),
    [
        ({"#p": [ME]}, "kind_not_allowed"),
        ({"kinds": [1, 30078], "#p": [ME]}, "kind_not_allowed"),
        ({"kinds": [1]}, "too_broad"),
        ({"kinds": [1], "#p": []}, "bad_filter"),
        ({"kinds": [], "#p": [ME]}, "bad_filter"),
    ],
)
def test_a_filter_must_name_allowed_kinds_and_narrow_them(filter_: dict[str, Any], result: str) -> None:
    parsed = read_filter(payload(filter_), 4096).filter
    assert refused(check_subscribable, parsed, VERSE_FILTER_KINDS) == result


@pytest.mark.parametrize(
    ("filter_", "field"),
    [
        ({"kinds": [1, 7, 9735], "#p": [ME]}, "#p"),  # the NIP's example: mentions, reactions, zaps of me
        ({"kinds": [9], "#h": ["pizza-lovers"]}, "#h"),  # a NIP-29 group
        ({"kinds": [1111], "#a": [f"34550:{ME}:rust"]}, "#a"),  # a NIP-72 community
        ({"kinds": [1], "authors": [ME], "#t": ["nostr"]}, "authors"),
        ({"kinds": [1], "#t": ["nostr"], "#r": ["x"]}, "#r"),
    ],
)
def test_filters_that_narrow_are_kept_and_indexed_by_one_field(filter_: dict[str, Any], field: str) -> None:
    parsed = read_filter(payload(filter_), 4096).filter
    check_subscribable(parsed, VERSE_FILTER_KINDS)
    assert narrowing_field(parsed) == field


def test_an_upsert_and_its_delete_name_the_same_filter() -> None:
    user = nostr_sdk.Keys.generate()
    upsert = as_event(verse_event(user, SERVER.public_hex, UPSERT, {"filter": {"kinds": [1, 9], "#p": [ME]}}))
    delete = as_event(
        verse_event(user, SERVER.public_hex, 3082, {"filter": {"#p": [ME], "kinds": [9, 1]}}, expiration=None)
    )
    ids = {read_filter(open_content(SERVER, event, 8192), 4096).filter_id for event in (upsert, delete)}
    assert len(ids) == 1
