"""Platform names and device tokens as every dialect checks them at registration; DNS answered by a table."""

from __future__ import annotations

import pytest

from pushstr.registry.model import Platform
from pushstr.registry.tokens import ACCEPTED_PLATFORMS, InvalidToken, check_device_token, parse_platform

DNS = {
    "push.example": ["93.184.215.14"],
    "dual.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "intranet.example": ["10.1.2.3"],
    "sneaky.example": ["93.184.215.14", "127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
}
lookups: list[str] = []


async def resolve(host: str, port: int) -> list[str]:
    lookups.append(host)
    if host not in DNS:
        raise OSError(f"no such host {host}")
    return DNS[host]


@pytest.fixture(autouse=True)
def _fresh_lookups() -> None:
    lookups.clear()


@pytest.mark.parametrize(
    ("value", "platform"),
    [
        ("ios", Platform.IOS),
        ("iOS", Platform.IOS),
        ("APNS", Platform.IOS),
        ("apns", Platform.IOS),
        ("android", Platform.ANDROID),
        ("Android", Platform.ANDROID),
        ("fcm", Platform.ANDROID),
        ("FCM", Platform.ANDROID),
        ("unifiedpush", Platform.UNIFIEDPUSH),
        ("UnifiedPush", Platform.UNIFIEDPUSH),
        ("up", Platform.UNIFIEDPUSH),
        ("UP", Platform.UNIFIEDPUSH),
        ("webpush", Platform.WEBPUSH),
        ("WebPush", Platform.WEBPUSH),
    ],
)
def test_platform_names_and_aliases(value: str, platform: Platform) -> None:
    assert parse_platform(value) is platform


@pytest.mark.parametrize("value", ["blackberry", "", " ios", "ios ", "web-push", "gcm", "i" * 500])
def test_unknown_platforms_name_the_accepted_values(value: str) -> None:
    with pytest.raises(ValueError, match="is not one of") as info:
        parse_platform(value)
    assert str(info.value).endswith(ACCEPTED_PLATFORMS)
    assert len(str(info.value)) < 200  # a long value is cut, not echoed whole


@pytest.mark.parametrize(
    "token",
    ["a1" * 32, "A1" * 32, "aBcD" * 16, "0f" * 100, "c0ffee" * 10 + "abcd"],
)
async def test_apns_tokens_accepted(token: str) -> None:
    await check_device_token(Platform.IOS, token)


@pytest.mark.parametrize(
    "token",
    ["", "a1" * 31, "a" * 65, "0f" * 101, "zz" * 32, "a1" * 31 + "g1", " " + "a1" * 32, "a1" * 32 + "\n", "١" * 64],
)
async def test_apns_tokens_refused(token: str) -> None:
    with pytest.raises(InvalidToken) as info:
        await check_device_token(Platform.IOS, token)
    assert str(info.value) == "device_token: an APNs token is even-length hex, 64–200 characters"


@pytest.mark.parametrize(
    "token",
    ["x", "bob-phone", "fGx3:APA91bH_-~!" + "z" * 150, "!" * 4096],
)
async def test_fcm_tokens_accepted(token: str) -> None:
    await check_device_token(Platform.ANDROID, token)


@pytest.mark.parametrize("token", ["", "has space", "tab\there", "line\n", "é" * 10, "x" * 4097, "nul\x00"])
async def test_fcm_tokens_refused(token: str) -> None:
    with pytest.raises(InvalidToken, match="device_token: an FCM token is printable ASCII without spaces, 1–4096"):
        await check_device_token(Platform.ANDROID, token)


@pytest.mark.parametrize("platform", [Platform.WEBPUSH, Platform.UNIFIEDPUSH])
@pytest.mark.parametrize(
    "url",
    [
        "https://push.example/wpush/v2/abc",
        "http://push.example:8080/up?token=abc",
        "https://dual.example/x",
        "https://93.184.215.14/x",
    ],
)
async def test_public_endpoints_accepted(platform: Platform, url: str) -> None:
    await check_device_token(platform, url, resolve=resolve)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/push",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/push",
        "http://10.0.0.7/push",
        "https://localhost/push",
        "https://intranet.example/push",
        "https://sneaky.example/push",
        "https://metadata.example/push",
        "https://unknown.example/push",
    ],
)
async def test_internal_endpoints_refused_without_saying_what_dns_answered(url: str) -> None:
    with pytest.raises(InvalidToken) as info:
        await check_device_token(Platform.WEBPUSH, url, resolve=resolve)
    reason = str(info.value)
    assert reason.startswith("device_token: the push endpoint's host must resolve to public addresses only")
    assert "allowed_hosts" in reason
    assert not any(address in reason for answers in DNS.values() for address in answers)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https:///x", "endpoint has no host"),
        ("ftp://push.example/x", "scheme 'ftp' is not http or https"),
        ("wss://push.example/x", "scheme 'wss' is not http or https"),
        ("a1" * 32, "scheme '' is not http or https"),
        ("http://[::1/x", "not a valid URL"),
    ],
)
async def test_malformed_endpoints_say_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(InvalidToken, match="device_token: a unifiedpush token is the push endpoint URL; ") as info:
        await check_device_token(Platform.UNIFIEDPUSH, url, resolve=resolve)
    assert why in str(info.value)
    assert lookups == []


async def test_allowed_hosts_and_allow_private_admit_internal_endpoints() -> None:
    await check_device_token(Platform.WEBPUSH, "http://127.0.0.1:9000/push", allowed_hosts=["127.0.0.1"])
    await check_device_token(Platform.WEBPUSH, "https://Intranet.Example/p", allowed_hosts=["intranet.example"])
    await check_device_token(Platform.UNIFIEDPUSH, "http://10.0.0.7/up", allow_private=True)
    assert lookups == []
    with pytest.raises(InvalidToken):
        await check_device_token(Platform.WEBPUSH, "http://10.0.0.7/push", allowed_hosts=["127.0.0.1"])


async def test_an_oversized_endpoint_is_refused_before_any_lookup() -> None:
    with pytest.raises(InvalidToken, match="at most 4096 characters"):
        await check_device_token(Platform.WEBPUSH, "https://push.example/" + "x" * 4096, resolve=resolve)
    assert lookups == []
