"""NIP-19 entities: published examples, round trips, nostr-sdk agreement, strict failures."""

from __future__ import annotations

from typing import Any

import nostr_sdk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushstr.nostr import bech32, nip19
from pushstr.nostr.errors import Bech32Error, InvalidKey
from pushstr.nostr.keys import Keys
from tests.conftest import load_vector

EXAMPLES = load_vector("nip19-examples.json")
HEX32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
RELAYS = st.lists(st.text(max_size=40), max_size=3)


@pytest.mark.parametrize("entry", EXAMPLES["keys"], ids=lambda entry: entry["bech32"][:12])
def test_bare_examples(entry: dict[str, str]) -> None:
    decode = {"npub": nip19.npub_decode, "nsec": nip19.nsec_decode}[entry["hrp"]]
    encode = {"npub": nip19.npub_encode, "nsec": nip19.nsec_encode}[entry["hrp"]]
    assert decode(entry["bech32"]) == entry["hex"]
    assert encode(entry["hex"]) == entry["bech32"]
    assert nip19.decode(entry["bech32"]) == (entry["hrp"], entry["hex"])


@pytest.mark.parametrize("entry", EXAMPLES["nsec_from_other_nips"], ids=lambda entry: entry["from"])
def test_nsecs_from_other_nips(entry: dict[str, str]) -> None:
    assert nip19.nsec_decode(entry["bech32"]) == entry["hex"]
    assert Keys.from_hex(entry["hex"]).public_hex == entry["pubkey"]
    assert nip19.nsec_encode(entry["hex"]) == entry["bech32"]


def test_nprofile_example() -> None:
    entry: dict[str, Any] = EXAMPLES["tlv"][0]
    profile = nip19.nprofile_decode(entry["bech32"])
    assert profile == nip19.Profile(entry["decoded"]["pubkey"], tuple(entry["decoded"]["relays"]))
    assert nip19.nprofile_encode(profile.pubkey, profile.relays) == entry["bech32"]
    assert nip19.decode(entry["bech32"]) == ("nprofile", profile)


@settings(max_examples=100, deadline=None)
@given(HEX32, RELAYS, st.one_of(st.none(), HEX32), st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_nevent_round_trip(event_id: str, relays: list[str], author: str | None, kind: int | None) -> None:
    encoded = nip19.nevent_encode(event_id, relays, author, kind)
    assert nip19.nevent_decode(encoded) == nip19.EventPointer(event_id, tuple(relays), author, kind)


@settings(max_examples=100, deadline=None)
@given(HEX32)
def test_bare_round_trip_against_nostr_sdk(value: str) -> None:
    assert nip19.note_decode(nip19.note_encode(value)) == value
    assert nostr_sdk.EventId.parse(value).to_bech32() == nip19.note_encode(value)
    sdk_keys = nostr_sdk.Keys.generate()
    npub = sdk_keys.public_key().to_bech32()
    assert nip19.npub_decode(npub) == sdk_keys.public_key().to_hex()
    assert nip19.npub_encode(sdk_keys.public_key().to_hex()) == npub
    assert nip19.nsec_decode(sdk_keys.secret_key().to_bech32()) == sdk_keys.secret_key().to_hex()


def test_nprofile_from_nostr_sdk() -> None:
    keys = nostr_sdk.Keys.generate()
    relays = [nostr_sdk.RelayUrl.parse("wss://relay.example.com"), nostr_sdk.RelayUrl.parse("wss://r2.example")]
    encoded = nostr_sdk.Nip19Profile(keys.public_key(), relays).to_bech32()
    profile = nip19.nprofile_decode(encoded)
    assert profile.pubkey == keys.public_key().to_hex()
    assert [relay.rstrip("/") for relay in profile.relays] == ["wss://relay.example.com", "wss://r2.example"]


def test_unknown_tlv_types_are_ignored() -> None:
    pubkey = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d"
    data = bytes([0, 32]) + bytes.fromhex(pubkey) + bytes([9, 3]) + b"abc" + bytes([1, 4]) + b"wss:"
    assert nip19.nprofile_decode(bech32.encode("nprofile", data)) == nip19.Profile(pubkey, ("wss:",))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "npub1",
        "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w7",  # checksum
        "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6wB",  # charset
        "Npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6",  # mixed case
        "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5",  # wrong prefix
        "npub1" + "q" * 6000,
    ],
)
def test_bad_npub(value: str) -> None:
    with pytest.raises(Bech32Error):
        nip19.npub_decode(value)


def test_bech32m_checksum_rejected() -> None:
    # The same data under the bech32m constant must not decode: NIP-19 is plain bech32.
    hrp, data = bech32.decode(EXAMPLES["keys"][0]["bech32"], 100)
    words = bech32._convert_bits(data, 8, 5, pad=True)
    polymod = bech32._polymod([*bech32._expand_hrp(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ 0x2BC830A3
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    bech32m = hrp + "1" + "".join(bech32.CHARSET[word] for word in words + checksum)
    with pytest.raises(Bech32Error, match="checksum"):
        nip19.npub_decode(bech32m)


def test_wrong_lengths_and_missing_tlv() -> None:
    with pytest.raises(Bech32Error, match="32 bytes"):
        nip19.npub_decode(bech32.encode("npub", b"\x01" * 31))
    with pytest.raises(Bech32Error, match="missing"):
        nip19.nprofile_decode(bech32.encode("nprofile", bytes([1, 2]) + b"ws"))
    with pytest.raises(Bech32Error, match="truncated"):
        nip19.nevent_decode(bech32.encode("nevent", bytes([0, 32]) + b"\x00" * 5))
    with pytest.raises(Bech32Error, match="unsupported"):
        nip19.decode(bech32.encode("naddr", b"\x00"))


def test_parse_pubkey() -> None:
    entry = EXAMPLES["keys"][0]
    assert nip19.parse_pubkey(entry["bech32"]) == entry["hex"]
    assert nip19.parse_pubkey(entry["hex"].upper()) == entry["hex"]
    assert nip19.parse_pubkey(f"  {entry['hex']} ") == entry["hex"]
    with pytest.raises(InvalidKey):
        nip19.parse_pubkey("ff" * 32)  # not on the curve
    with pytest.raises(InvalidKey):
        nip19.parse_pubkey("hello")
    with pytest.raises(Bech32Error):
        nip19.parse_pubkey(entry["bech32"][:-1] + "q")
