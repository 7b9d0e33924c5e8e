"""NIP-01 events: strict parsing, canonical id, signatures — against fixtures and nostr-sdk."""

from __future__ import annotations

import json
from typing import Any

import nostr_sdk
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushstr.nostr.errors import InvalidEvent
from pushstr.nostr.event import (
    Event,
    KindClass,
    compute_id,
    kind_class,
    parse_event,
    parse_verified_event,
    serialize_for_id,
    sign_event,
)
from pushstr.nostr.keys import Keys, verify_schnorr
from tests.conftest import load_vector
from tests.nostr.strategies import CONTENT, KINDS, SECRETS, TAGS, TIMESTAMPS, sdk_tags

KEYS = Keys.generate()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_dict(**changes: Any) -> dict[str, Any]:
    base = sign_event(KEYS, 1, "hi", [["p", KEYS.public_hex]], 1700000000).to_dict()
    base.update(changes)
    return base


def test_round_trip_and_verify() -> None:
    event = sign_event(KEYS, 1, "hello\nworld", [["t", "x"]], 1700000000)
    parsed = parse_verified_event(event.to_json())
    assert parsed == event
    assert parsed.is_valid() and parsed.has_valid_id() and parsed.has_valid_signature()


def test_serialization_escapes() -> None:
    raw = serialize_for_id("ab", 1, 2, [["t", "\x01"]], 'q"\\\n\r\t\b\f\x00\x7f\u2028é/')
    assert raw == '[0,"ab",1,2,[["t","\\u0001"]],"q\\"\\\\\\n\\r\\t\\b\\f\\u0000\x7f\u2028é/"]'.encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": "a" * 63}, "id"),
        ({"id": 5}, "id"),
        ({"pubkey": 5}, "pubkey"),
        ({"pubkey": "A" * 64}, "pubkey"),
        ({"pubkey": "g" * 64}, "pubkey"),
        ({"sig": "0" * 127}, "sig"),
        ({"created_at": 1.5}, "created_at"),
        ({"created_at": -1}, "created_at"),
        ({"created_at": True}, "created_at"),
        ({"created_at": "1"}, "created_at"),
        ({"kind": 65536}, "kind"),
        ({"kind": -1}, "kind"),
        ({"kind": False}, "kind"),
        ({"tags": {}}, "tags"),
        ({"tags": [["p", 1]]}, "tag"),
        ({"tags": ["p"]}, "tag"),
        ({"content": None}, "content"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_strict_shape(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(orjson.dumps(_valid_dict(**changes)))


def _upper_hex(value: str) -> str:
    upper = value.upper()
    assert upper != value  # the signed values contain at least one letter
    return upper


@pytest.mark.parametrize(
    ("field", "bad", "reason"),
    [
        ("id", _upper_hex, "id does not match"),
        ("id", lambda value: "g" + value[1:], "id does not match"),
        ("id", lambda value: " " + value[1:], "id does not match"),
        ("sig", _upper_hex, "bad signature"),
        ("sig", lambda value: "g" + value[1:], "bad signature"),
        ("sig", lambda value: value[:63] + " " + value[64:], "bad signature"),
    ],
)
def test_id_and_sig_characters_are_refused_at_verify(field: str, bad: Any, reason: str) -> None:
    """Parsing checks only the type and length of id and sig; verify refuses anything but lowercase hex, even when
    the value decodes to the right bytes (an upper-case copy of a valid signature)."""
    fields = _valid_dict()
    fields[field] = bad(fields[field])
    event = parse_event(orjson.dumps(fields))
    with pytest.raises(InvalidEvent, match=reason):
        event.verify()
    assert not event.is_valid()
    assert not (event.has_valid_id() and event.has_valid_signature())


def test_missing_field_and_non_object() -> None:
    data = _valid_dict()
    del data["sig"]
    with pytest.raises(InvalidEvent, match="missing field 'sig'"):
        parse_event(json.dumps(data))
    for bad in ("[]", "1", "nope", "", b"\xff"):
        with pytest.raises(InvalidEvent):
            parse_event(bad)
    with pytest.raises(InvalidEvent):
        parse_event(12)  # type: ignore[arg-type]


def test_size_limit() -> None:
    big = sign_event(KEYS, 1, "x" * 70000).to_json()
    with pytest.raises(InvalidEvent, match="larger than"):
        parse_event(big)
    assert parse_event(big, max_bytes=len(big)).content == "x" * 70000


def test_tampering_is_detected() -> None:
    event = sign_event(KEYS, 1, "hi")
    forged = Event.from_dict({**event.to_dict(), "content": "ho"})
    with pytest.raises(InvalidEvent, match="id does not match"):
        forged.verify()
    other = sign_event(Keys.generate(), 1, "hi", created_at=event.created_at)
    stolen_sig = Event.from_dict({**event.to_dict(), "sig": other.sig})
    with pytest.raises(InvalidEvent, match="bad signature"):
        stolen_sig.verify()
    assert not stolen_sig.is_valid() and stolen_sig.has_valid_id()


def test_lone_surrogates_rejected_cleanly() -> None:
    with pytest.raises(InvalidEvent):
        sign_event(KEYS, 1, "a\ud800b")
    with pytest.raises(InvalidEvent):
        sign_event(KEYS, 1, "a", [["t", "\udfff"]])
    text = json.dumps(_valid_dict(content="x")).replace('"x"', '"\\ud800"')
    with pytest.raises(InvalidEvent):
        parse_event(text)
    with pytest.raises(InvalidEvent):
        parse_event(json.dumps(_valid_dict(content="\ud800"), ensure_ascii=False))
    raw_dict_event = Event.from_dict(_valid_dict(content="\ud800"))
    assert not raw_dict_event.is_valid()
    with pytest.raises(InvalidEvent):
        raw_dict_event.verify()


@pytest.mark.parametrize(
    "name",
    ["nip98-example.json"],
)
def test_nip98_example_rejected_for_id(name: str) -> None:
    fixture = load_vector(name)
    event = Event.from_dict(fixture["event"])
    assert event.computed_id() == fixture["findings"]["computed_id_from_nip01_serialization"]
    assert event.has_valid_signature()
    with pytest.raises(InvalidEvent, match="id does not match"):
        event.verify()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (("nip51_mute_list_kind10000", "event"), "id does not match"),
        # The NIP-57 text prints the receipt without a sig; its id is wrong as well.
        (("nip57_zap_receipt_kind9735", "event_as_published"), "missing field 'sig'"),
        (("nip57_zap_receipt_kind9735", "embedded_zap_request_kind9734", "event"), "id does not match"),
    ],
)
def test_misc_examples_rejected_for_id(path: tuple[str, ...], reason: str) -> None:
    node: Any = load_vector("nip-misc-examples.json")
    for key in path[:-1]:
        node = node[key]
    fields = node[path[-1]]
    computed = compute_id(fields["pubkey"], fields["created_at"], fields["kind"], fields["tags"], fields["content"])
    assert computed == node["computed_id"] != fields["id"]
    with pytest.raises(InvalidEvent, match=reason):
        parse_verified_event(fields)


def test_kind_class_and_tags() -> None:
    assert kind_class(1) is KindClass.REGULAR
    assert kind_class(0) is kind_class(3) is kind_class(10002) is KindClass.REPLACEABLE
    assert kind_class(22242) is KindClass.EPHEMERAL
    assert kind_class(30023) is KindClass.ADDRESSABLE
    assert kind_class(40000) is KindClass.REGULAR
    event = sign_event(KEYS, 7, "+", [["e", "x1"], ["p", "y1", "wss://r"], ["p", "y2"], ["e"], ["t", "z"]])
    assert event.e_tags == ["x1"]
    assert event.p_tags == ["y1", "y2"]
    assert event.first_tag_value("t") == "z"
    assert event.first_tag_value("q") is None
    assert event.kind_class is KindClass.REGULAR


def _sdk_event(secret: bytes, kind: int, content: str, tags: list[list[str]], created_at: int) -> Any:
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), content).tags(sdk_tags(tags))
    builder = builder.custom_created_at(nostr_sdk.Timestamp.from_secs(created_at))
    return builder.finalize(nostr_sdk.Keys.parse(secret.hex()))


@SETTINGS
@given(SECRETS, KINDS, CONTENT, TAGS, TIMESTAMPS)
def test_nostr_sdk_events_verify_here(
    secret: bytes, kind: int, content: str, tags: list[list[str]], created_at: int
) -> None:
    sdk_event = _sdk_event(secret, kind, content, tags, created_at)
    event = parse_verified_event(sdk_event.as_json())
    assert event.id == sdk_event.id().to_hex()
    assert event.content == content
    assert event.tags == [tag.to_vec() for tag in sdk_event.tags()]


@SETTINGS
@given(SECRETS, KINDS, CONTENT, TAGS, TIMESTAMPS)
def test_our_events_verify_in_nostr_sdk(
    secret: bytes, kind: int, content: str, tags: list[list[str]], created_at: int
) -> None:
    event = sign_event(Keys(secret), kind, content, tags, created_at)
    sdk_event = nostr_sdk.Event.from_json(event.to_json().decode())
    assert sdk_event.verify()
    assert sdk_event.id().to_hex() == event.id
    recomputed = nostr_sdk.EventId.compute(
        nostr_sdk.PublicKey.parse(event.pubkey),
        nostr_sdk.Timestamp.from_secs(created_at),
        nostr_sdk.Kind(kind),
        sdk_tags(tags),
        content,
    )
    assert recomputed.to_hex() == compute_id(event.pubkey, created_at, kind, tags, content)


@SETTINGS
@given(st.binary(min_size=0, max_size=100), SECRETS)
def test_schnorr_any_length_against_nostr_sdk(message: bytes, secret: bytes) -> None:
    keys = Keys(secret)
    sdk_keys = nostr_sdk.Keys.parse(secret.hex())
    assert sdk_keys.public_key().to_hex() == keys.public_hex
    sdk_signature = bytes.fromhex(sdk_keys.sign_schnorr(message))
    assert verify_schnorr(keys.public, message, sdk_signature)
    assert not verify_schnorr(keys.public, message + b"\x00", sdk_signature)
    assert verify_schnorr(keys.public, message, keys.sign_schnorr(message))
