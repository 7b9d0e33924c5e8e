"""BIP-340 reference vectors (all 19 rows, incl. the non-32-byte messages of rows 15–18)."""

from __future__ import annotations

import csv
import io

import pytest

from pushstr.nostr.errors import InvalidKey
from pushstr.nostr.keys import Keys, public_key_bytes, verify_schnorr
from tests.conftest import load_vector

ROWS = list(csv.DictReader(io.StringIO(load_vector("bip340-test-vectors.csv"))))


def test_all_rows_present() -> None:
    assert [int(row["index"]) for row in ROWS] == list(range(19))


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"row{row['index']}")
def test_verify(row: dict[str, str]) -> None:
    expected = row["verification result"] == "TRUE"
    result = verify_schnorr(
        bytes.fromhex(row["public key"]), bytes.fromhex(row["message"]), bytes.fromhex(row["signature"])
    )
    assert result is expected


@pytest.mark.parametrize("row", [row for row in ROWS if row["secret key"]], ids=lambda row: f"row{row['index']}")
def test_sign_reproduces_signature(row: dict[str, str]) -> None:
    keys = Keys(bytes.fromhex(row["secret key"]))
    assert keys.public_hex == row["public key"].lower()
    signature = keys.sign_schnorr(bytes.fromhex(row["message"]), bytes.fromhex(row["aux_rand"]))
    assert signature.hex() == row["signature"].lower()


def test_signing_rows_cover_other_message_lengths() -> None:
    lengths = {len(bytes.fromhex(row["message"])) for row in ROWS if row["secret key"]}
    assert {0, 1, 17, 100} <= lengths


def test_bad_secret_keys_rejected() -> None:
    for secret in (b"\x00" * 32, b"\xff" * 32, b"\x01" * 31):
        with pytest.raises(InvalidKey):
            Keys(secret)
    with pytest.raises(InvalidKey):
        Keys.from_hex("zz" * 32)


def test_public_key_must_be_on_curve() -> None:
    with pytest.raises(InvalidKey):
        public_key_bytes("ff" * 32)
    with pytest.raises(InvalidKey):
        public_key_bytes("AB" * 32)
    keys = Keys.generate()
    assert public_key_bytes(keys.public_hex) == keys.public


def test_verify_never_raises_on_garbage() -> None:
    assert verify_schnorr(b"\x00" * 32, b"m", b"\x00" * 64) is False
    assert verify_schnorr(b"\x01" * 31, b"m", b"\x00" * 64) is False
    assert verify_schnorr(Keys.generate().public, b"m", b"\x00" * 63) is False


def test_one_time_keys_are_verified_without_entering_the_cache() -> None:
    from pushstr.nostr.event import sign_event
    from pushstr.nostr.keys import xonly_public_key

    event = sign_event(Keys.generate(), 1059, "wrap", [["p", "ab" * 32]])
    before = xonly_public_key.cache_info()
    assert event.signs(bytes.fromhex(event.id))
    after = xonly_public_key.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)
    note = sign_event(Keys.generate(), 1, "note")
    assert note.signs(bytes.fromhex(note.id))
    assert xonly_public_key.cache_info().misses == after.misses + 1


@pytest.mark.parametrize("value", ["AB" * 32, " " + "ab" * 31 + "a", "ab" * 31, "gg" * 32, 12])
def test_is_hex_accepts_only_lowercase_hex_of_the_length(value: object) -> None:
    from pushstr.nostr.keys import is_hex

    assert not is_hex(value, 64)
    assert is_hex("0123456789abcdef" * 4, 64)
