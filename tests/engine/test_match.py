from __future__ import annotations

from pushstr.engine.match import match_event
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration

ALICE = Keys.generate()
BOB = Keys.generate()


def _reg(pubkey: str, token: str, kinds: frozenset[int] = frozenset({4, 1059, 1})) -> Registration:
    return Registration(pubkey, token, Platform.IOS, "default", kinds=kinds)


def test_recipients_from_p_tags_never_the_author() -> None:
    devices = {
        ALICE.public_hex: [_reg(ALICE.public_hex, "a1")],
        BOB.public_hex: [_reg(BOB.public_hex, "b1"), _reg(BOB.public_hex, "b2", frozenset({9735}))],
    }
    event = sign_event(ALICE, 4, "x", [["p", BOB.public_hex], ["p", ALICE.public_hex], ["p", BOB.public_hex]])
    found = match_event(event, lambda pubkey: devices.get(pubkey, []))
    assert [(m.recipient, m.device.device_token) for m in found] == [(BOB.public_hex, "b1")]


def test_unregistered_and_unwanted_kinds_match_nothing() -> None:
    devices = {BOB.public_hex: [_reg(BOB.public_hex, "b1", frozenset({4}))]}
    mention = sign_event(ALICE, 1, "hi", [["p", BOB.public_hex]])
    stranger = sign_event(ALICE, 4, "hi", [["p", "cd" * 32]])
    assert match_event(mention, lambda pubkey: devices.get(pubkey, [])) == []
    assert match_event(stranger, lambda pubkey: devices.get(pubkey, [])) == []
