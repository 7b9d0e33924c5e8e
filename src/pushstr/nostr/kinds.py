"""The event kinds pushstr names, in one place (NIP-01 and the NIPs that define each)."""

from __future__ import annotations

from enum import IntEnum


class Kind(IntEnum):
    """Event kinds by meaning. An `IntEnum`, so members compare and hash as the plain ints relays send."""

    METADATA = 0  # NIP-01 profile
    TEXT_NOTE = 1  # NIP-01: mentions and replies
    ENCRYPTED_DM = 4  # NIP-04
    REPOST = 6  # NIP-18
    REACTION = 7  # NIP-25
    GROUP_CHAT = 9  # NIP-29 relay group chat message
    GROUP_CHAT_THREADED = 10  # NIP-29 (deprecated threaded reply, still sent by 0xchat)
    GROUP_THREAD = 11  # NIP-29 group thread
    GROUP_THREAD_REPLY = 12  # NIP-29 group thread reply
    SEAL = 13  # NIP-59
    CHANNEL_MESSAGE = 42  # NIP-28 public channel message
    GIFT_WRAP = 1059  # NIP-59 (NIP-17 DMs, Mostro, Marmot)
    ZAP_REQUEST = 9734  # NIP-57
    ZAP_RECEIPT = 9735  # NIP-57
    RELAY_LIST = 10002  # NIP-65 relay list metadata: ["r", url, "read" | "write"?]
    DM_RELAYS = 10050  # NIP-17 DM relays: ["relay", url]
    CLIENT_AUTH = 22242  # NIP-42
    PUSH_SETTINGS = 22456  # 0xchat's push settings and heartbeats
    HTTP_AUTH = 27235  # NIP-98


#: What a device is pushed for when it names no kinds: DMs, gift wraps, mentions, zaps.
DEFAULT_PUSH_KINDS: tuple[int, ...] = (Kind.ENCRYPTED_DM, Kind.GIFT_WRAP, Kind.TEXT_NOTE, Kind.ZAP_RECEIPT)
