"""What `GET /status` says: the dashboard's numbers, read from the Prometheus registry that /metrics serves.

Every count here is a sample /metrics also shows, taken through `restricted_registry`: only the collectors of these
families run, so a poll every second costs a few dict copies, not a whole scrape, and the dashboard and a
Prometheus server can never disagree about what happened. Counts are totals since start; the page takes rates
from two samples, so the server keeps no history. Relay states come from the pool, as in `GET /relays`, under the
same labels (a relay a user named by its digest). Nothing here names a user: no pubkey, no token, no URL a user
supplied.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry

from pushstr import __version__
from pushstr.api.relay_status import relay_state
from pushstr.app import Service

ADMITTED = "pushstr_events_admitted_total"
MATCHED = "pushstr_events_matched_total"
REJECTED = "pushstr_events_rejected_total"
NOTIFICATIONS = "pushstr_notifications_total"
OUTCOMES = "pushstr_push_outcomes_total"
DROPPED = "pushstr_push_dropped_total"
PRUNED = "pushstr_push_pruned_total"
OUTBOX_PENDING = "pushstr_outbox_pending"
OUTBOX_OLDEST = "pushstr_outbox_oldest_seconds"
QUEUE_DEPTH = "pushstr_push_queue_depth"
REGISTRATIONS = "pushstr_registrations"
SEND_BUCKETS = "pushstr_push_send_seconds_bucket"
SEND_COUNT = "pushstr_push_send_seconds_count"
SEND_SUM = "pushstr_push_send_seconds_sum"
PROCESS_START = "process_start_time_seconds"
SAMPLES = frozenset(
    {
        ADMITTED,
        MATCHED,
        REJECTED,
        NOTIFICATIONS,
        OUTCOMES,
        DROPPED,
        PRUNED,
        OUTBOX_PENDING,
        OUTBOX_OLDEST,
        QUEUE_DEPTH,
        REGISTRATIONS,
        SEND_BUCKETS,
        SEND_COUNT,
        SEND_SUM,
        PROCESS_START,
    }
)
#: Shown even before the first of each, so that the page's legend does not change as they appear.
PUSH_OUTCOMES = ("delivered", "retry", "dead", "stale_dead", "rejected", "gave_up")
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
USER_RELAYS_SHOWN = 50
"""Relays users named can number thousands; the page lists the busiest, and counts the rest by state."""

Labels = dict[str, str]
Samples = dict[str, list[tuple[Labels, float]]]


def read_samples(registry: CollectorRegistry = REGISTRY) -> Samples:
    """sample name → (labels, value) for every series of the families the status reads."""
    samples: Samples = {name: [] for name in SAMPLES}
    for family in registry.restricted_registry(SAMPLES).collect():
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def _total(series: Iterable[tuple[Labels, float]]) -> int:
    return int(sum(value for _labels, value in series))


def _by(series: Iterable[tuple[Labels, float]], label: str, initial: Iterable[str] = ()) -> dict[str, int]:
    """The series summed by one label's value (the others, such as `app` and `transport`, summed over)."""
    totals = dict.fromkeys(initial, 0)
    for labels, value in series:
        key = labels.get(label, "")
        totals[key] = totals.get(key, 0) + int(value)
    return totals


def quantile(q: float, bounds: Sequence[float], cumulative: Sequence[int]) -> float | None:
    """The `q` quantile of a histogram, interpolated linearly within its bucket as Prometheus's
    `histogram_quantile` does (past the last finite bound: that bound). None for an empty histogram."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0, 0.0
    for bound, count in zip(bounds, cumulative, strict=False):
        if count >= rank:
            return lower + (bound - lower) * (rank - below) / (count - below)  # below < rank <= count
        below, lower = count, bound
    return bounds[-1] if bounds else None


def _latency(samples: Samples) -> dict[str, Any]:
    by_bound: dict[float, int] = {}
    for labels, value in samples[SEND_BUCKETS]:
        bound = float(labels["le"])
        by_bound[bound] = by_bound.get(bound, 0) + int(value)
    finite = sorted(bound for bound in by_bound if not math.isinf(bound))
    cumulative = [by_bound[bound] for bound in finite] + [by_bound.get(math.inf, 0)]
    body: dict[str, Any] = {
        "count": _total(samples[SEND_COUNT]),
        "sum_seconds": round(sum(value for _labels, value in samples[SEND_SUM]), 6),
        "bounds": finite,
        "cumulative": cumulative,
    }
    for name, q in QUANTILES:
        estimate = quantile(q, finite, cumulative)
        body[name] = None if estimate is None else round(estimate, 6)
    return body


def _relays(service: Service) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    configured = frozenset(service.settings.nostr.relays)
    statuses = service.pool.status()
    operators = [status for status in statuses if status.url in configured]
    users = [status for status in statuses if status.url not in configured]
    by_state: dict[str, int] = {}
    for status in users:
        by_state[status.state.value] = by_state.get(status.state.value, 0) + 1
    busiest = sorted(users, key=lambda status: status.events, reverse=True)[:USER_RELAYS_SHOWN]
    shown = [relay_state(service, status, configured) for status in (*operators, *busiest)]
    return shown, {"total": len(users), "by_state": by_state, "shown": len(busiest)}


def status_document(service: Service, mode: Literal["public", "token"]) -> dict[str, Any]:
    """The body of `GET /status` (`schemas.Status`)."""
    samples = read_samples()
    started = samples[PROCESS_START]
    outbox_oldest = max((value for _labels, value in samples[OUTBOX_OLDEST]), default=0.0)
    relays, user_relays = _relays(service)
    return {
        "version": __version__,
        "time": round(time.time(), 3),
        "started_at": started[0][1] if started else None,
        "dashboard": mode,
        "events": {
            "admitted": _total(samples[ADMITTED]),
            "matched": _total(samples[MATCHED]),
            "rejected": _by(samples[REJECTED], "reason"),
        },
        "notifications": _by(samples[NOTIFICATIONS], "result"),
        "pushes": {
            "outcomes": _by(samples[OUTCOMES], "outcome", PUSH_OUTCOMES),
            "dropped": _by(samples[DROPPED], "reason"),
            "pruned": _total(samples[PRUNED]),
        },
        "outbox": {
            "pending": _total(samples[OUTBOX_PENDING]),
            "oldest_seconds": round(outbox_oldest, 3),
            "queued": _total(samples[QUEUE_DEPTH]),
        },
        "latency": _latency(samples),
        "registrations": [
            {"dialect": labels["dialect"], "platform": labels["platform"], "count": int(value)}
            for labels, value in samples[REGISTRATIONS]
        ],
        "relays": relays,
        "user_relays": user_relays,
    }
