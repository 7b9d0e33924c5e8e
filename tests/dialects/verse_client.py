"""Verse control events built the way the reference's client builds them (`docs/nip-xx-push-notifications.md`,
"Register (JS sketch)"): tags `["p", <service>]`, `["app", <id>]`, `["expiration", <now + 90 days>]`, content
`nip44.encrypt(servicePubkey, myPriv, JSON.stringify(payload))`, signed by the user. nostr-sdk signs and encrypts
(the reference service decrypts with nostr-sdk's NIP-44); `pushstr_side=True` uses pushstr's own signing and
NIP-44 instead, which are checked against the official vectors."""

from __future__ import annotations

import time
from typing import Any

import nostr_sdk
import orjson

from pushstr.nostr import nip44
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys

REGISTER, DEREGISTER, UPSERT, DELETE = 3079, 3080, 3081, 3082
NINETY_DAYS = 7_776_000
FCM_TOKEN = "fGx1:APA91bHverse-token_0123456789abcdef"
OTHER_TOKEN = "cQ7z:APA91bGsecond-device_fedcba9876543210"


def verse_event(
    user: Any,
    server: str,
    kind: int,
    payload: Any,
    *,
    app: str | None = "default",
    expiration: int | str | None = "default",
    at: int | None = None,
    p: str | None = "server",
) -> Any:
    """A signed control event; `payload` is JSON-encoded unless it is a string already. `app=None` leaves the app
    tag out, `expiration=None` the expiration tag, `p=None` the p tag; `expiration` defaults to 90 days ahead."""
    created = int(time.time()) if at is None else at
    tags = []
    if p is not None:
        tags.append(["p", server if p == "server" else p])
    if app is not None:
        tags.append(["app", app])
    if expiration == "default":
        tags.append(["expiration", str(created + NINETY_DAYS)])
    elif expiration is not None:
        tags.append(["expiration", str(expiration)])
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    content = nostr_sdk.nip44_encrypt(
        user.secret_key(), nostr_sdk.PublicKey.parse(server), text, nostr_sdk.Nip44Version.V2
    )
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), content).tags([nostr_sdk.Tag.parse(tag) for tag in tags])
    return builder.custom_created_at(nostr_sdk.Timestamp.from_secs(created)).finalize(user)


def as_event(sdk_event: Any) -> Event:
    """pushstr's view of a nostr-sdk event (what admission hands a kind handler)."""
    return Event.from_dict(orjson.loads(sdk_event.as_json()))


def pushstr_event(user: Keys, server: str, kind: int, payload: Any, *, app: str = "default") -> Event:
    """The same event signed and encrypted by pushstr's own NIP-01 and NIP-44 code."""
    now = int(time.time())
    tags = [["p", server], ["app", app], ["expiration", str(now + NINETY_DAYS)]]
    content = nip44.encrypt_to(user, server, orjson.dumps(payload).decode())
    return sign_event(user, kind, content, tags, created_at=now)


def sdk_keys(keys: Keys) -> Any:
    return nostr_sdk.Keys.parse(keys.secret_hex)
