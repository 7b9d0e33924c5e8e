"""The bodies the service's own routes answer with, as the OpenAPI document describes them.

The routes build their JSON directly (the relay status is assembled per request from live objects); these models
only declare its shape, and the schema test checks every answer against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str


class OutboxState(BaseModel):
    pending: int = Field(description="pushes accepted and not yet ended")
    oldest_seconds: float = Field(description="age of the oldest of them")


class Ready(BaseModel):
    ready: bool
    outbox: OutboxState | None = Field(None, description="absent when delivery keeps no outbox")


class Info(BaseModel):
    name: str
    version: str
    pubkey: str = Field(description="the server's Nostr key (hex): what events for the server are addressed to")
    npub: str
    dialects: list[str]
    dialect_info: dict[str, dict[str, Any]] = Field(description="what a client of each dialect needs to know")
    relay_endpoint: bool
    transports: list[str]
    apps: list[str]
    vapid_public_key: str | None
    relays: list[str] = Field(description="the operator's relays, without credentials")
    other_relays: int = Field(description="relays watched for users (their lists, their registrations)")


class Subscriptions(BaseModel):
    open: int
    planned: int
    allowed: int | None


class Limits(BaseModel):
    max_subscriptions: int
    max_message_length: int
    max_filters: int
    source: str


class RelayState(BaseModel):
    relay: str = Field(description="the URL for the operator's relays, a digest label for relays users named")
    configured: bool
    state: str
    mode: Literal["pubkeys", "firehose"] = Field(
        description="pubkey lists in the filters, or whole kinds matched here (`nostr.firehose`)"
    )
    authenticated: bool
    connections: int
    subscriptions: Subscriptions
    limits: Limits | None
    events: int
    eose: int
    notices: int
    refused: int
    garbage: int
    reconnects: int
    connect_failures: int
    reqs_sent: int
    closes_sent: int
    last_error: str | None


class Relays(BaseModel):
    relays: list[RelayState]


class About(BaseModel):
    name: str
    version: str
    docs: str
