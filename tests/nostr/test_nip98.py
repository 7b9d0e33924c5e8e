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


def _signed(tags: list[list[str]], kind: int = 27235, created_at: int = NOW) -> str:
    return _header(_event(tags, kind, created_at))


GET_URL = [["u", URL], ["method", "GET"]]


@pytest.mark.parametrize(
    "case",
    [
        (None, "GET", None, NOW, "missing Authorization header: send 'Authorization: Nostr <base64"),
        ("", "GET", None, NOW, "missing Authorization header"),
        ("Bearer abc", "GET", None, NOW, "Authorization scheme is not Nostr"),
        ("Nostr ", "GET", None, NOW, "no token after 'Nostr'"),
        ("nostr", "GET", None, NOW, "no token after 'Nostr'"),
        ("Nostr ###", "GET", None, NOW, "Authorization token is not base64"),
        ("Nostr " + base64.b64encode(b"{nope").decode(), "GET", None, NOW, "Authorization token is not JSON"),
        ("Nostr " + base64.b64encode(b"[]").decode(), "GET", None, NOW, "event is malformed: event must be a JSON"),
        ("Nostr " + "A" * 9000, "GET", None, NOW, "Authorization header is larger than 8192 bytes"),
        (_signed(GET_URL, kind=1), "GET", None, NOW, "wrong kind 1: a NIP-98 authorization is kind 27235"),
        (_signed(GET_URL), "GET", None, NOW + 61, "token too old: created_at is 61 s in the past; .*±60 s"),
        (_signed(GET_URL), "GET", None, NOW - 61, "token too far in the future: created_at is 61 s ahead; .*±60 s"),
        (_signed([["method", "GET"]]), "GET", None, NOW, f"missing u tag: .*expected {URL}$"),
        (_signed([["u", URL + "/x"], ["method", "GET"]]), "GET", None, NOW, f"u tag does not match .*expected {URL}$"),
        (_signed(GET_URL), "POST", None, NOW, "method tag does not match the request: expected POST$"),
        (_signed([["u", URL]]), "GET", None, NOW, "missing method tag: expected GET$"),
        (_signed([["u", URL], ["method", "POST"]]), "POST", BODY, NOW, "missing payload tag: a request with a body"),
        (
            _signed([["u", URL], ["method", "POST"], ["payload", "00" * 32]]),
            "POST",
            BODY,
            NOW,
            "payload tag does not match the sha256 of the body",
        ),
    ],
)
def test_rejections(case: tuple[str | None, str, bytes | None, int, str]) -> None:
    header, method, body, now, reason = case
    with pytest.raises(AuthError, match=reason) as info:
        nip98.verify_authorization(header, method, URL, body, now=now)
    assert info.value.message.startswith("restricted: ")


def test_the_time_window_is_the_configured_one() -> None:
    header = _signed(GET_URL)
    assert nip98.verify_authorization(header, "GET", URL, now=NOW + 300, window=300)
    with pytest.raises(AuthError, match=r"301 s in the past; tokens are accepted within ±300 s .*\(now 1800000301\)"):
        nip98.verify_authorization(header, "GET", URL, now=NOW + 301, window=300)


@pytest.mark.parametrize(
    ("signed", "requested"),
    [
        ("HTTPS://Push.Example.COM/register", "https://push.example.com/register"),
        ("https://push.example.com:443/register", "https://push.example.com/register"),
        ("http://push.example.com:80/register", "http://push.example.com/register"),
        ("https://push.example.com/register/", "https://push.example.com/register"),
        ("https://push.example.com/register", "https://push.example.com:443/register/"),
        ("https://push.example.com", "https://push.example.com/"),
        ("http://[::1]:80/register", "http://[::1]/register"),
        ("https://push.example.com:8443/r?a=1&b=2", "https://PUSH.example.com:8443/r/?a=1&b=2"),
    ],
)
def test_u_is_compared_after_normalising(signed: str, requested: str) -> None:
    header = _signed([["u", signed], ["method", "GET"]])
    assert nip98.verify_authorization(header, "GET", requested, now=NOW)


@pytest.mark.parametrize(
    ("signed", "requested"),
    [
        ("https://push.example.com/Register", "https://push.example.com/register"),
        ("http://push.example.com/register", "https://push.example.com/register"),
        ("https://push.example.com/register", "http://push.example.com/register"),
        ("https://push.example.com:80/register", "https://push.example.com/register"),
        ("http://push.example.com:443/register", "http://push.example.com/register"),
        ("https://push.example.com/register?x=1", "https://push.example.com/register"),
        ("https://push.example.com/register", "https://push.example.com/register?x=1"),
        ("https://push.example.com/r?a=1&b=2", "https://push.example.com/r?b=2&a=1"),
        ("https://push.example.com/r?a=B", "https://push.example.com/r?a=b"),
        ("https://push.example.com/register//", "https://push.example.com/register"),
        ("https://push.example.com/re%67ister", "https://push.example.com/register"),
        ("https://push.example.com.evil/register", "https://push.example.com/register"),
        ("https://user@push.example.com/register", "https://push.example.com/register"),
        ("https://push.example.com:99999/register", "https://push.example.com/register"),
        ("push.example.com/register", "https://push.example.com/register"),
    ],
)
def test_u_normalising_loosens_nothing_else(signed: str, requested: str) -> None:
    header = _signed([["u", signed], ["method", "GET"]])
    with pytest.raises(AuthError, match=r"u tag does not match the request URL: expected https?://push\.example\.com/"):
        nip98.verify_authorization(header, "GET", requested, now=NOW)


def test_the_expected_url_is_said_normalised() -> None:
    header = _signed([["u", "https://elsewhere.example/"], ["method", "GET"]])
    with pytest.raises(AuthError, match=r"expected https://push\.example\.com/register\?a=1$"):
        nip98.verify_authorization(header, "GET", "HTTPS://Push.Example.com:443/register/?a=1", now=NOW)


def test_normalize_url() -> None:
    assert nip98.normalize_url("HTTPS://Push.Example.com:443/A/?q=B#F") == "https://push.example.com/A?q=B#F"
    assert nip98.normalize_url("https://push.example.com:8443") == "https://push.example.com:8443"
    assert nip98.normalize_url("http://[2001:DB8::1]:8080/") == "http://[2001:db8::1]:8080"
    assert nip98.normalize_url("not a url") == "not a url"
    assert nip98.normalize_url("https://h:bad/x") == "https://h:bad/x"


def test_payload_optional_when_not_required() -> None:
    header = _header(_event([["u", URL], ["method", "POST"]]))
    assert nip98.verify_authorization(header, "POST", URL, BODY, now=NOW, require_payload=False)


def test_forged_id_and_signature() -> None:
    event = _event([["u", URL], ["method", "GET"]])
    forged_id = Event.from_dict({**event.to_dict(), "created_at": NOW + 1})
    with pytest.raises(AuthError, match="bad id: the event id is not the sha256"):
        nip98.verify_authorization(_header(forged_id), "GET", URL, now=NOW)
    other = sign_event(Keys.generate(), 27235, "", event.tags, NOW)
    forged_sig = Event.from_dict({**event.to_dict(), "sig": other.sig})
    with pytest.raises(AuthError, match="bad signature: sig does not verify"):
        nip98.verify_authorization(_header(forged_sig), "GET", URL, now=NOW)


def test_nip_example_rejected_for_id() -> None:
    fixture = load_vector("nip98-example.json")
    event = fixture["event"]
    header = "Nostr\n" + fixture["authorization_header_token_verbatim"]  # unpadded, line break as in the NIP
    with pytest.raises(AuthError, match="Authorization scheme is not Nostr"):
        nip98.verify_authorization(header, "GET", event["tags"][0][1], now=event["created_at"])
    header = "Nostr " + fixture["authorization_header_token_verbatim"]
    with pytest.raises(AuthError, match="bad id"):
        nip98.verify_authorization(header, "GET", event["tags"][0][1], now=event["created_at"])


def test_replay_cache() -> None:
    clock = [float(NOW)]
    cache = nip98.ReplayCache(window=60, max_entries=3, clock=lambda: clock[0])
    header = nip98.build_authorization(KEYS, "GET", URL, created_at=NOW)
    nip98.verify_authorization(header, "GET", URL, now=NOW, seen=cache)
    with pytest.raises(AuthError, match="token replayed: an authorization event is good for one request"):
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
