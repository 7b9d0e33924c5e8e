"""Prometheus metrics of the delivery stage (batching, queues, attempts, pruning): batcher and dispatcher share them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = Counter(
    "pushstr_push_outcomes_total",
    "Attempts to push, by app, transport and outcome (delivered, retry, dead, stale_dead, rejected, gave_up)",
    ["app", "transport", "outcome"],
)
DROPPED = Counter(
    "pushstr_push_dropped_total",
    "Pushes dropped before any attempt, by app and reason (queue_full, unknown_app, outbox_full, shutdown)",
    ["app", "reason"],
)
QUEUE_DEPTH = Gauge("pushstr_push_queue_depth", "Pushes waiting in the dispatcher queue", ["app"])
SEND_SECONDS = Histogram(
    "pushstr_push_send_seconds",
    "Time of one request to a push service",
    ["transport"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PRUNED = Counter("pushstr_push_pruned_total", "Registrations removed because the push service said dead", ["app"])
COALESCED = Counter("pushstr_push_coalesced_total", "Notifications merged into an earlier push by batching", ["app"])
BATCH_OVERFLOW = Counter(
    "pushstr_push_batch_overflow_total", "Notifications sent unbatched because the batcher was full", ["app"]
)
OUTBOX_WRITES = Counter(
    "pushstr_outbox_row_writes_total", "Outbox rows inserted, updated or deleted in the store (write amplification)"
)
OUTBOX_COMMIT_FAILURES = Counter("pushstr_outbox_commit_failures_total", "Outbox group commits that failed")
