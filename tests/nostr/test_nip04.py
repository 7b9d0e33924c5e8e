"""NIP-04: go-nostr interop vectors (via nostr-tools) and nostr-sdk in both directions."""

from __future__ import annotations

import hashlib

import nostr_sdk
import pytest
from hypothesis import given, settings

from pushstr.nostr import nip04
from pushstr.nostr.errors import DecryptError
from pushstr.nostr.keys import Keys
from tests.conftest import load_vector
from tests.nostr.strategies import CONTENT, SECRETS

VECTORS = load_vector("nip04-vectors.json")["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=["short", "long"])
def test_interop_vectors_decrypt(vector: dict[str, str]) -> None:
    for sec, pub in ((vector["sec2"], vector["pub1"]), (vector["sec1"], vector["pub2"])):
        plaintext = nip04.decrypt(Keys.from_hex(sec), pub, vector["content"])
        if "plaintext" in vector:
            assert plaintext == vector["plaintext"]
        else:
            assert hashlib.sha256(plaintext.encode()).hexdigest() == vector["plaintext_sha256"]
    assert nip04.looks_like_nip04(vector["content"])


def test_shared_x_is_the_raw_coordinate() -> None:
    alice, bob = Keys.generate(), Keys.generate()
    shared = nip04.shared_x(alice, bob.public_hex)
    assert shared == nip04.shared_x(bob, alice.public_hex)
    # coincurve's ecdh() hashes the point; the NIP-04 key is the x coordinate itself.
    assert shared != alice.private_key.ecdh(b"\x02" + bob.public)


def test_fixed_iv_and_errors() -> None:
    alice, bob = Keys.generate(), Keys.generate()
    content = nip04.encrypt(alice, bob.public_hex, "hi", iv=b"\x00" * 16)
    assert content.endswith("?iv=AAAAAAAAAAAAAAAAAAAAAA==")
    assert nip04.decrypt(bob, alice.public_hex, content) == "hi"
    with pytest.raises(DecryptError):
        nip04.decrypt(Keys.generate(), alice.public_hex, content)
    for bad in (
        "",
        "abc",
        "abc?iv=",
        "!!!?iv=AAAAAAAAAAAAAAAAAAAAAA==",
        content + "x",
        content.replace("?iv=", "?iv=A"),
    ):
        with pytest.raises(DecryptError):
            nip04.decrypt(bob, alice.public_hex, bad)
    with pytest.raises(DecryptError, match="peer"):
        nip04.decrypt(bob, "zz", content)
    assert not nip04.looks_like_nip04("hello")
    assert not nip04.looks_like_nip04("AgAA" * 40)


@settings(max_examples=100, deadline=None)
@given(SECRETS, SECRETS, CONTENT)
def test_against_nostr_sdk_both_ways(secret_a: bytes, secret_b: bytes, text: str) -> None:
    alice, bob = Keys(secret_a), Keys(secret_b)
    sdk_alice, sdk_bob = nostr_sdk.Keys.parse(secret_a.hex()), nostr_sdk.Keys.parse(secret_b.hex())
    ours = nip04.encrypt(alice, bob.public_hex, text)
    assert nostr_sdk.nip04_decrypt(sdk_bob.secret_key(), sdk_alice.public_key(), ours) == text
    theirs = nostr_sdk.nip04_encrypt(sdk_alice.secret_key(), sdk_bob.public_key(), text)
    assert nip04.decrypt(bob, alice.public_hex, theirs) == text
    assert nip04.looks_like_nip04(theirs)
