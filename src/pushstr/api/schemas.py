"""The bodies the service's own routes answer with, as the OpenAPI document describes them.

The routes build their JSON directly (the relay status is assembled per request from live objects); these models
only declare its shape, and the schema test checks every answer against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from pushstr.relays.firehose import Reason


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
    mode_reason: Reason | None = Field(
        description="why: as configured; the lists fit (`firehose_above_subscriptions`); they need more "
        "subscriptions than that, or more connections than `max_connections_per_relay`; the firehose brought more "
        "than `firehose_max_events_per_second`; the relay refused the firehose. None before the first plan"
    )
    firehose_events_per_second: float | None = Field(
        description="live events per second of the firehose (a minute's moving average), while the relay is on it"
    )
    mode_switches: int = Field(description="switches between lists and the firehose so far")
    uncovered_pubkeys: int = Field(
        description="pubkeys not asked of this relay: its lists need more than `max_connections_per_relay`"
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


class EventCounts(BaseModel):
    admitted: int = Field(description="events that passed admission (`pushstr_events_admitted_total`)")
    matched: int = Field(description="admitted events that reached a device (`pushstr_events_matched_total`)")
    rejected: dict[str, int] = Field(description="events admission refused, by reason (`pushstr_events_rejected`)")


class PushCounts(BaseModel):
    outcomes: dict[str, int] = Field(
        description="attempts to push by outcome: delivered, retry, dead, stale_dead, rejected, gave_up "
        "(`pushstr_push_outcomes_total`, every app and transport)"
    )
    dropped: dict[str, int] = Field(description="pushes dropped before any attempt, by reason")
    pruned: int = Field(description="registrations removed because the push service said dead")


class OutboxStatus(BaseModel):
    pending: int = Field(description="pushes matched and not final yet, every app (`pushstr_outbox_pending`)")
    oldest_seconds: float = Field(description="age of the oldest of them (`pushstr_outbox_oldest_seconds`)")
    queued: int = Field(description="pushes waiting in the dispatcher queues (`pushstr_push_queue_depth`)")


class Latency(BaseModel):
    """`pushstr_push_send_seconds` summed over transports: the client takes windows from two samples' buckets."""

    count: int
    sum_seconds: float
    bounds: list[float] = Field(description="the buckets' upper bounds in seconds, ascending")
    cumulative: list[int] = Field(description="requests at or under each bound, then all of them (+Inf)")
    p50: float | None = Field(description="since start, interpolated within buckets; null before any request")
    p90: float | None
    p99: float | None


class RegistrationCount(BaseModel):
    dialect: str
    platform: str
    count: int


class UserRelays(BaseModel):
    total: int = Field(description="relays watched for users (their lists, their registrations)")
    by_state: dict[str, int]
    shown: int = Field(description="how many of them `relays` lists, those with the most events first")


class Status(BaseModel):
    """What the dashboard polls: totals since start (the page takes rates from two samples) and current states."""

    version: str
    time: float = Field(description="Unix time the numbers were read")
    started_at: float | None = Field(description="Unix time the process started, where the platform tells it")
    dashboard: Literal["public", "token"]
    events: EventCounts
    notifications: dict[str, int] = Field(description="notifications handed to delivery, by result")
    pushes: PushCounts
    outbox: OutboxStatus
    latency: Latency
    registrations: list[RegistrationCount] = Field(description="per dialect and platform (`pushstr_registrations`)")
    relays: list[RelayState] = Field(description="every operator's relay, then the busiest relays users named")
    user_relays: UserRelays
