"""Nostr clients for end-to-end tests: events built by nostr-sdk (a second implementation), published over
plain WebSockets, and devices registered through HTTP + NIP-98."""

from __future__ import annotations

from typing import Any

import httpx
import nostr_sdk
import orjson
import websockets

from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from tests.harness import RunningServer


async def publish(relay_url: str, event: Any) -> None:
    """Send one event to a relay and wait for its OK."""
    payload = event.as_json() if hasattr(event, "as_json") else orjson.dumps(event).decode()
    async with websockets.connect(relay_url) as ws:
        await ws.send(f'["EVENT",{payload}]')
        reply = orjson.loads(await ws.recv())
    assert reply[0] == "OK" and reply[2] is True, reply


def dm(sender: Any, recipient: Any, text: str) -> Any:
    """A NIP-04 direct message (kind 4)."""
    content = nostr_sdk.nip04_encrypt(sender.secret_key(), recipient.public_key(), text)
    tags = [nostr_sdk.Tag.parse(["p", recipient.public_key().to_hex()])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(4), content).tags(tags).finalize(sender)


def gift_wrap(sender: Any, recipient: Any, text: str) -> Any:
    """A NIP-17 private message: kind 14 rumor, sealed and gift-wrapped (kind 1059)."""
    tags = [nostr_sdk.Tag.parse(["p", recipient.public_key().to_hex()])]
    rumor = nostr_sdk.EventBuilder(nostr_sdk.Kind(14), text).tags(tags).finalize_unsigned(sender.public_key())
    return nostr_sdk.nip59_make_gift_wrap(sender, recipient.public_key(), rumor)


async def register(server: RunningServer, user: Any, token: str, platform: str = "android") -> None:
    secret = Keys(bytes.fromhex(user.secret_key().to_hex()))
    body = orjson.dumps({"npub": nip19.npub_encode(secret.public_hex), "device_token": token, "platform": platform})
    url = server.base_url + "/register"
    header = build_authorization(secret, "POST", url, body)
    async with httpx.AsyncClient() as client:
        response = await client.post(url, content=body, headers={"authorization": header})
    assert response.status_code == 201, response.text
