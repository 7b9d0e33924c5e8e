"""Bad input never raises anything but the protocol layer's own errors (`NostrError` subclasses)."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushstr.nostr import nip04, nip19, nip44, nip59, nip98
from pushstr.nostr.bech32 import CHARSET
from pushstr.nostr.errors import NostrError
from pushstr.nostr.event import Event, parse_event, sign_event
from pushstr.nostr.filters import parse_filter
from pushstr.nostr.keys import Keys

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = Keys.generate()
PEER = Keys.generate()
ANY_TEXT = st.text(max_size=300)  # includes lone surrogates
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
EVENT_FIELDS = st.fixed_dictionaries(
    {
        "id": st.one_of(st.just("a" * 64), JSON_VALUES),
        "pubkey": st.one_of(st.just(KEYS.public_hex), JSON_VALUES),
        "created_at": st.one_of(st.integers(), JSON_VALUES),
        "kind": st.one_of(st.integers(), JSON_VALUES),
        "tags": st.one_of(st.lists(st.lists(st.text(max_size=5))), JSON_VALUES),
        "content": st.one_of(st.text(max_size=50), JSON_VALUES),
        "sig": st.one_of(st.just("b" * 128), JSON_VALUES),
    }
)


def _only_layer_errors(call: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(NostrError):
        call(*args, **kwargs)


def _json(value: object) -> bytes:
    """stdlib JSON: big integers, Infinity and escaped lone surrogates all reach the parser under test."""
    return json.dumps(value).encode()


@FUZZ
@given(st.one_of(st.binary(max_size=300), ANY_TEXT, JSON_VALUES.map(_json), EVENT_FIELDS.map(_json)))
def test_parse_event(data: bytes | str) -> None:
    _only_layer_errors(lambda: parse_event(data).verify())


@FUZZ
@given(EVENT_FIELDS)
def test_event_from_dict(fields: dict[str, Any]) -> None:
    _only_layer_errors(lambda: parse_event(fields).is_valid())


@FUZZ
@given(
    st.one_of(
        ANY_TEXT,
        st.builds(
            lambda hrp, body: hrp + "1" + body,
            st.sampled_from(["npub", "nsec", "note", "nprofile", "nevent", "naddr", ""]),
            st.text(CHARSET, max_size=120),
        ),
    )
)
def test_nip19(value: str) -> None:
    _only_layer_errors(nip19.decode, value)
    _only_layer_errors(nip19.parse_pubkey, value)
    _only_layer_errors(nip19.nprofile_decode, value)
    _only_layer_errors(nip19.nevent_decode, value)


B64 = st.binary(max_size=200).map(lambda raw: base64.b64encode(raw).decode())


@FUZZ
@given(
    st.one_of(ANY_TEXT, st.builds(lambda a, b: f"{a}?iv={b}", B64, B64)), st.one_of(st.just(PEER.public_hex), ANY_TEXT)
)
def test_nip04_decrypt(content: str, peer: str) -> None:
    _only_layer_errors(nip04.decrypt, KEYS, peer, content)
    nip04.looks_like_nip04(content)


NIP44_LIKE = st.binary(min_size=0, max_size=300).map(lambda raw: base64.b64encode(b"\x02" + raw).decode())


@FUZZ
@given(st.one_of(ANY_TEXT, NIP44_LIKE, B64), st.one_of(st.just(PEER.public_hex), ANY_TEXT))
def test_nip44_decrypt(payload: str, peer: str) -> None:
    _only_layer_errors(nip44.decrypt, bytes(32), payload)
    _only_layer_errors(nip44.decrypt_from, KEYS, peer, payload)
    nip44.looks_like_nip44(payload)


REAL_WRAP = nip59.wrap(PEER, KEYS.public_hex, 14, "hello")


@FUZZ
@given(st.one_of(ANY_TEXT, NIP44_LIKE), st.sampled_from([REAL_WRAP.pubkey, PEER.public_hex, "f" * 64]), st.booleans())
def test_nip59_unwrap(content: str, pubkey: str, verify_wrap: bool) -> None:
    wrap = Event("0" * 64, pubkey, 1, 1059, [], content, "0" * 128)
    _only_layer_errors(nip59.unwrap, KEYS, wrap, verify_wrap=verify_wrap)


@FUZZ
@given(st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_nip59_unwrap_corrupted_real_wrap(position: int, noise: bytes) -> None:
    raw = bytearray(base64.b64decode(REAL_WRAP.content))
    index = position % len(raw)
    raw[index : index + len(noise)] = noise
    wrap = Event.from_dict({**REAL_WRAP.to_dict(), "content": base64.b64encode(bytes(raw)).decode()})
    _only_layer_errors(nip59.unwrap, KEYS, wrap, verify_wrap=False)


@FUZZ
@given(
    st.one_of(
        st.none(),
        ANY_TEXT,
        JSON_VALUES.map(lambda value: "Nostr " + base64.b64encode(_json(value)).decode()),
        EVENT_FIELDS.map(lambda value: "Nostr " + base64.b64encode(_json(value)).decode()),
    )
)
def test_nip98_verify(header: str | None) -> None:
    _only_layer_errors(nip98.verify_authorization, header, "GET", "https://x/", b"body", now=0)


@FUZZ
@given(st.lists(st.lists(ANY_TEXT, max_size=3), max_size=3), ANY_TEXT)
def test_nip98_signed_junk(tags: list[list[str]], method: str) -> None:
    try:
        event = sign_event(KEYS, 27235, "", tags, 0)
    except NostrError:
        return
    header = "Nostr " + base64.b64encode(event.to_json()).decode()
    _only_layer_errors(nip98.verify_authorization, header, method, "https://x/", b"", now=0)


@FUZZ
@given(JSON_VALUES)
def test_parse_filter(value: object) -> None:
    _only_layer_errors(parse_filter, value)
