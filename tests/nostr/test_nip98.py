"""NIP-98 HTTP auth: every rejection reason, the NIP example, the replay cache."""

from __future__ import annotations

import base64

import pytest

from pushstr.nostr import nip98
from pushstr.nostr.errors import AuthError
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from tests.conftest import load_vector

KEYS = Keys.generate()
URL = "https://push.example.com/register"
NOW = 1_800_000_000
BODY = b'{"npub":"x"}'


def _header(event: Event) -> str:
    return "Nostr " + base64.b64encode(event.to_json()).decode()


def _event(tags: list[list[str]], kind: int = 27235, created_at: int = NOW) -> Event:
    return sign_event(KEYS, kind, "", tags, created_at)


def test_valid_token_with_payload() -> None:
    header = nip98.build_authorization(KEYS, "post", URL, BODY, created_at=NOW)
    event = nip98.verify_authorization(header, "POST", URL, BODY, now=NOW + 30)
    assert event.pubkey == KEYS.public_hex
    assert nip98.verify_authorization(header.replace("Nostr", "nostr"), "post", URL, None, now=NOW)


@pytest.mark.parametrize(
    "case",
    [
        (None, "GET", URL, None, NOW, "missing Authorization header"),
        ("", "GET", URL, None, NOW, "missing Authorization header"),
        ("Bearer abc", "GET", URL, None, NOW, "malformed header"),
        ("Nostr ", "GET", URL, None, NOW, "malformed header"),
        ("Nostr ###", "GET", URL, None, NOW, "malformed header"),
        ("Nostr " + base64.b64encode(b"[]").decode(), "GET", URL, None, NOW, "malformed header"),
        ("Nostr " + "A" * 9000, "GET", URL, None, NOW, "malformed header"),
        (_header(_event([["u", URL], ["method", "GET"]], kind=1)), "GET", URL, None, NOW, "wrong kind"),
        (_header(_event([["u", URL], ["method", "GET"]])), "GET", URL, None, NOW + 61, "stale or future created_at"),
        (_header(_event([["u", URL], ["method", "GET"]])), "GET", URL, None, NOW - 61, "stale or future created_at"),
        (_header(_event([["u", URL + "/"], ["method", "GET"]])), "GET", URL, None, NOW, "url mismatch"),
        (_header(_event([["method", "GET"]])), "GET", URL, None, NOW, "missing u tag"),
        (_header(_event([["u", URL], ["method", "GET"]])), "POST", URL, None, NOW, "method mismatch"),
        (_header(_event([["u", URL]])), "GET", URL, None, NOW, "missing method tag"),
        (_header(_event([["u", URL], ["method", "POST"]])), "POST", URL, BODY, NOW, "missing payload tag"),
        (
            _header(_event([["u", URL], ["method", "POST"], ["payload", "00" * 32]])),
            "POST",
            URL,
            BODY,
            NOW,
            "payload hash mismatch",
        ),
    ],
)
def test_rejections(case: tuple[str | None, str, str, bytes | None, int, str]) -> None:
    header, method, url, body, now, reason = case
    with pytest.raises(AuthError, match=reason) as info:
        nip98.verify_authorization(header, method, url, body, now=now)
    assert info.value.message.startswith("restricted: ")


def test_payload_optional_when_not_required() -> None:
    header = _header(_event([["u", URL], ["method", "POST"]]))
    assert nip98.verify_authorization(header, "POST", URL, BODY, now=NOW, require_payload=False)


def test_forged_id_and_signature() -> None:
    event = _event([["u", URL], ["method", "GET"]])
    forged_id = Event.from_dict({**event.to_dict(), "created_at": NOW + 1})
    with pytest.raises(AuthError, match="event id does not match"):
        nip98.verify_authorization(_header(forged_id), "GET", URL, now=NOW)
    other = sign_event(Keys.generate(), 27235, "", event.tags, NOW)
    forged_sig = Event.from_dict({**event.to_dict(), "sig": other.sig})
    with pytest.raises(AuthError, match="bad signature"):
        nip98.verify_authorization(_header(forged_sig), "GET", URL, now=NOW)


def test_nip_example_rejected_for_id() -> None:
    fixture = load_vector("nip98-example.json")
    event = fixture["event"]
    header = "Nostr\n" + fixture["authorization_header_token_verbatim"]  # unpadded, line break as in the NIP
    with pytest.raises(AuthError, match="malformed header"):
        nip98.verify_authorization(header, "GET", event["tags"][0][1], now=event["created_at"])
    header = "Nostr " + fixture["authorization_header_token_verbatim"]
    with pytest.raises(AuthError, match="event id does not match"):
        nip98.verify_authorization(header, "GET", event["tags"][0][1], now=event["created_at"])


def test_replay_cache() -> None:
    clock = [float(NOW)]
    cache = nip98.ReplayCache(window=60, max_entries=3, clock=lambda: clock[0])
    header = nip98.build_authorization(KEYS, "GET", URL, created_at=NOW)
    nip98.verify_authorization(header, "GET", URL, now=NOW, seen=cache)
    with pytest.raises(AuthError, match="token replayed"):
        nip98.verify_authorization(header, "GET", URL, now=NOW + 10, seen=cache)
    clock[0] = NOW + 61
    assert cache("fresh", NOW + 61) is False
    assert len(cache) == 1  # the first id expired
    for index in range(5):
        assert cache(f"id{index}", NOW + 61 + index) is False
    assert len(cache) == 3


def test_rejected_tokens_do_not_reach_the_cache() -> None:
    calls: list[str] = []

    def seen(event_id: str, created_at: int) -> bool:
        calls.append(event_id)
        return False

    header = _header(_event([["u", URL], ["method", "GET"]]))
    with pytest.raises(AuthError):
        nip98.verify_authorization(header, "GET", URL + "x", now=NOW, seen=seen)
    assert calls == []
