"""NIP-44 v2: the official vector file, the 2026 extended-prefix vectors, and nostr-sdk both ways."""

from __future__ import annotations

import hashlib
from typing import Any

import nostr_sdk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushstr.nostr import nip44
from pushstr.nostr.errors import DecryptError, InvalidKey
from pushstr.nostr.keys import Keys
from tests.conftest import VECTORS, load_vector
from tests.nostr.strategies import SECRETS

V2 = load_vector("nip44.vectors.json")["v2"]
EXTENDED = load_vector("nip44-extended-prefix-vectors.json")


def test_vector_file_checksum() -> None:
    raw = load_vector("nip44.vectors.json.sha256").split()[0]
    assert hashlib.sha256((VECTORS / "nip44.vectors.json").read_bytes()).hexdigest() == raw


@pytest.mark.parametrize("vector", V2["valid"]["get_conversation_key"])
def test_conversation_key(vector: dict[str, str]) -> None:
    keys = Keys.from_hex(vector["sec1"])
    assert nip44.conversation_key(keys, vector["pub2"]).hex() == vector["conversation_key"]
    assert nip44.derive_conversation_key(keys, vector["pub2"]).hex() == vector["conversation_key"]


@pytest.mark.parametrize("vector", V2["invalid"]["get_conversation_key"], ids=lambda vector: vector["note"])
def test_invalid_conversation_key(vector: dict[str, str]) -> None:
    with pytest.raises(InvalidKey):
        nip44.conversation_key(Keys.from_hex(vector["sec1"]), vector["pub2"])


def test_message_keys() -> None:
    conversation = bytes.fromhex(V2["valid"]["get_message_keys"]["conversation_key"])
    for vector in V2["valid"]["get_message_keys"]["keys"]:
        chacha_key, chacha_nonce, hmac_key = nip44.message_keys(conversation, bytes.fromhex(vector["nonce"]))
        assert (chacha_key.hex(), chacha_nonce.hex(), hmac_key.hex()) == (
            vector["chacha_key"],
            vector["chacha_nonce"],
            vector["hmac_key"],
        )


@pytest.mark.parametrize(("unpadded", "padded"), V2["valid"]["calc_padded_len"])
def test_calc_padded_len(unpadded: int, padded: int) -> None:
    assert nip44.calc_padded_len(unpadded) == padded


@pytest.mark.parametrize("vector", V2["valid"]["encrypt_decrypt"], ids=lambda vector: vector["plaintext"][:12])
def test_encrypt_decrypt(vector: dict[str, str]) -> None:
    sender, receiver = Keys.from_hex(vector["sec1"]), Keys.from_hex(vector["sec2"])
    key = nip44.conversation_key(sender, receiver.public_hex)
    assert key.hex() == vector["conversation_key"]
    assert nip44.conversation_key(receiver, sender.public_hex) == key
    payload = nip44.encrypt(key, vector["plaintext"], bytes.fromhex(vector["nonce"]))
    assert payload == vector["payload"]
    assert nip44.decrypt(key, payload) == vector["plaintext"]
    assert nip44.decrypt_from(receiver, sender.public_hex, payload) == vector["plaintext"]
    assert nip44.looks_like_nip44(payload)


@pytest.mark.parametrize("vector", V2["valid"]["encrypt_decrypt_long_msg"], ids=lambda vector: vector["pattern"])
def test_long_messages(vector: dict[str, Any]) -> None:
    plaintext = vector["pattern"] * vector["repeat"]
    assert hashlib.sha256(plaintext.encode()).hexdigest() == vector["plaintext_sha256"]
    key = bytes.fromhex(vector["conversation_key"])
    payload = nip44.encrypt(key, plaintext, bytes.fromhex(vector["nonce"]))
    assert hashlib.sha256(payload.encode()).hexdigest() == vector["payload_sha256"]
    assert nip44.decrypt(key, payload) == plaintext


@pytest.mark.parametrize("vector", V2["invalid"]["decrypt"], ids=lambda vector: vector["note"])
def test_invalid_payloads(vector: dict[str, str]) -> None:
    with pytest.raises(DecryptError):
        nip44.decrypt(bytes.fromhex(vector["conversation_key"]), vector["payload"])


def test_stale_invalid_length_list() -> None:
    # The vector file predates the 2026-06-28 change: of [0, 65536, 100000, 10000000] only 0 is still invalid.
    lengths = V2["invalid"]["encrypt_msg_lengths"]
    assert lengths[0] == 0
    key = bytes(range(32))
    with pytest.raises(ValueError, match=r"1\.\.4294967295"):
        nip44.encrypt(key, "")
    for length in (65536, 100000):
        assert length in lengths
        payload = nip44.encrypt(key, "z" * length)
        assert nip44.decrypt(key, payload) == "z" * length


@pytest.mark.parametrize("vector", EXTENDED["vectors"], ids=lambda vector: str(vector["plaintext_len"]))
def test_extended_prefix_vectors(vector: dict[str, Any]) -> None:
    key, nonce = bytes.fromhex(EXTENDED["conversation_key"]), bytes.fromhex(EXTENDED["nonce"])
    plaintext = "a" * vector["plaintext_len"]
    assert hashlib.sha256(plaintext.encode()).hexdigest() == vector["plaintext_sha256"]
    assert nip44.calc_padded_len(vector["plaintext_len"]) == vector["padded_len"]
    padded = nip44.pad(plaintext.encode())
    prefix = 2 if vector["prefix"].startswith("u16") else 6
    assert len(padded) == prefix + vector["padded_len"]
    payload = nip44.encrypt(key, plaintext, nonce)
    assert hashlib.sha256(payload.encode()).hexdigest() == vector["payload_sha256"]
    assert nip44.decrypt(key, payload) == plaintext


def test_extended_prefix_must_be_canonical() -> None:
    short_in_long_form = b"\x00\x00" + (10).to_bytes(4, "big") + b"x" * 10 + bytes(22)
    with pytest.raises(DecryptError, match="extended prefix"):
        nip44.unpad(short_in_long_form)
    with pytest.raises(DecryptError):
        nip44.unpad(b"\x00\x00\x00")
    with pytest.raises(DecryptError):
        nip44.unpad(b"\x00\x05hello" + bytes(26))  # one zero byte short


def test_payload_size_cap() -> None:
    key = bytes(range(32))
    payload = nip44.encrypt(key, "a" * 1000)
    with pytest.raises(DecryptError, match="size"):
        nip44.decrypt(key, payload, max_chars=500)


@settings(max_examples=60, deadline=None)
@given(SECRETS, SECRETS, st.text(st.characters(codec="utf-8"), min_size=1, max_size=300))
def test_against_nostr_sdk_both_ways(secret_a: bytes, secret_b: bytes, text: str) -> None:
    alice, bob = Keys(secret_a), Keys(secret_b)
    sdk_alice, sdk_bob = nostr_sdk.Keys.parse(secret_a.hex()), nostr_sdk.Keys.parse(secret_b.hex())
    ours = nip44.encrypt_to(alice, bob.public_hex, text)
    assert nostr_sdk.nip44_decrypt(sdk_bob.secret_key(), sdk_alice.public_key(), ours) == text
    theirs = nostr_sdk.nip44_encrypt(sdk_alice.secret_key(), sdk_bob.public_key(), text, nostr_sdk.Nip44Version.V2)
    assert nip44.decrypt_from(bob, alice.public_hex, theirs) == text
    assert nip44.looks_like_nip44(theirs)
