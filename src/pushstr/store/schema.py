"""The tables as the queries see them: the shape the last migration in `migrations.py` leaves behind."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, MetaData, PrimaryKeyConstraint, Table, Text

metadata = MetaData()

registrations = Table(
    "registrations",
    metadata,
    Column("pubkey", Text, nullable=False),
    Column("device_token", Text, nullable=False),
    Column("platform", Text, nullable=False),
    Column("app", Text, nullable=False),
    Column("dialect", Text, nullable=False),
    # Sorted, comma-separated kind numbers ("1,4,1059,9735"): compact, and identical sets give identical text,
    # which lets the loader parse each distinct set once.
    Column("kinds", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("mode", Text),  # a `Mode` value; NULL: the app's mode
    Column("webpush_p256dh", Text),
    Column("webpush_auth", Text),
    Column("device_pubkey", Text),
    # `Registration.groups`, `.authors` and `.relays`: the values joined by single spaces (64-hex ids and relay
    # URLs never contain whitespace; the writer refuses any that do), `authors` sorted so that equal sets give
    # equal text. NULL when empty: most devices have none, and a NULL costs nothing to store or decode.
    Column("groups", Text),
    Column("authors", Text),
    Column("relays", Text),
    # The last final outcome of the device's pushes (`DeliveryStatus`), written by the outbox's commits; not part
    # of `Registration`, and reset by a re-registration.
    Column("last_push_at", Double),
    Column("last_outcome", Text),
    PrimaryKeyConstraint("pubkey", "device_token"),
)

pushed_events = Table(
    "pushed_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("seen_at", BigInteger, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("event_id", Text, nullable=False),
    Column("pubkey", Text, nullable=False),
    Column("device_token", Text, nullable=False),
    Column("app", Text, nullable=False),
    # The notification as JSON (see `delivery.outbox`): enough to render the push again after a restart.
    Column("notification", Text, nullable=False),
    Column("enqueued_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("next_attempt_at", Double, nullable=False),
    Column("attempts", BigInteger, nullable=False),
    Column("last_reason", Text),
    PrimaryKeyConstraint("event_id", "pubkey", "device_token"),
)

used_tokens = Table(
    "used_tokens",
    metadata,
    Column("event_id", Text, primary_key=True),
    # Unix seconds after which the token fails the NIP-98 time check anyway, so the row can go.
    Column("expires_at", BigInteger, nullable=False),
)

preferences = Table(
    "preferences",
    metadata,
    Column("pubkey", Text, nullable=False),
    Column("device_token", Text, nullable=False),  # sealed like the registration's
    # `registry.preferences.Preferences.to_json`, sealed like the token (it holds the private mutes a user handed
    # over): a JSON object, read leniently so later fields can be added.
    Column("preferences", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
    PrimaryKeyConstraint("pubkey", "device_token"),
)

# Several instances on one PostgreSQL database (`pushstr.cluster`); unused by a single instance.
cluster_instances = Table(
    "cluster_instances",
    metadata,
    Column("instance_id", Text, primary_key=True),
    # The cluster's identity: every instance must hold the same server key and public URL.
    Column("server_pubkey", Text, nullable=False),
    Column("public_url", Text),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),  # the database's clock, as every lease time here
)

shard_leases = Table(
    "shard_leases",
    metadata,
    Column("shard", BigInteger, primary_key=True),
    Column("owner", Text),  # NULL: free
    Column("expires_at", Double, nullable=False),
)

# One row per change to a pubkey's registrations or preferences, so the other instances re-read that pubkey; the
# sequence number is the readers' cursor, and old rows are pruned.
registry_changes = Table(
    "registry_changes",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("pubkey", Text, nullable=False),
    Column("changed_at", Double, nullable=False),
)

# `pushed_events` per shard: an event is handled for the shards whose devices it reached, so an instance taking
# over a shard re-reads the relays' window and skips exactly what the shard's previous owner handled.
handled_shards = Table(
    "handled_shards",
    metadata,
    Column("event_id", Text, nullable=False),
    Column("shard", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("event_id", "shard"),
)

# Pushes held during a device's quiet hours, one row per device: how many, the latest (`outbox.encode_notification`,
# sealed: it may carry the event), its kind and whether the held ones were of several kinds. Several instances add
# to the same row; the one that deletes it when the window ends sends the summary.
held_pushes = Table(
    "held_pushes",
    metadata,
    Column("pubkey", Text, nullable=False),
    Column("device_token", Text, nullable=False),  # sealed like the registration's
    Column("app", Text, nullable=False),
    Column("ends_at", Double, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("kind", BigInteger, nullable=False),
    Column("mixed", BigInteger, nullable=False),  # 0 or 1
    Column("notification", Text, nullable=False),
    PrimaryKeyConstraint("pubkey", "device_token"),
)

# Users' notification filters (Verse kinds 3081 and 3082), by the app the client named, the user and the filter's
# id. Id and filter are sealed like device tokens (a filter tells whom its user follows and which groups they are
# in); the id deterministically, so that it stays a key.
user_filters = Table(
    "user_filters",
    metadata,
    Column("app", Text, nullable=False),
    Column("pubkey", Text, nullable=False),
    Column("filter_id", Text, nullable=False),
    Column("filter_json", Text, nullable=False),  # `verse_message.canonical_json`
    Column("created_at", Double, nullable=False),
    PrimaryKeyConstraint("app", "pubkey", "filter_id"),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", BigInteger, primary_key=True),
    Column("applied_at", Double, nullable=False),
)
