"""One relay's state as the unauthenticated pages show it (`GET /relays`, the dashboard's `GET /status`).

A relay a user named is shown by the digest label it has in metrics (`RelayPool.label`), and its last error only by
kind: error text can carry the host it failed on (and, for any relay, a URL's query, where a token may sit: an
operator's relay has its raw URL replaced by its label).
"""

from __future__ import annotations

from typing import Any

from pushstr.app import Service
from pushstr.relays.connection import RelayStatus


def relay_state(service: Service, status: RelayStatus, configured: frozenset[str]) -> dict[str, Any]:
    """`status` with its plan and limits, as `schemas.RelayState` describes it."""
    url = status.url
    plan = service.pool.plan_for(url)
    mode = service.pool.mode_for(url)
    limits = service.pool.limits_for(url)
    connections = len(plan.lanes) if plan is not None else 0
    error = status.last_error
    label = service.pool.label(url)
    if url in configured:
        error = error.replace(url, label) if error is not None else None
    else:
        error = error.partition(":")[0] if error is not None else None
    return {
        "relay": label,
        "configured": url in configured,
        "state": status.state.value,
        "mode": "firehose" if plan is not None and plan.firehose else "pubkeys",
        "mode_reason": mode.reason.value if mode is not None else None,
        "firehose_events_per_second": round(mode.events_per_second, 1)
        if mode is not None and mode.events_per_second is not None
        else None,
        "mode_switches": mode.switches if mode is not None else 0,
        "uncovered_pubkeys": mode.uncovered_pubkeys if mode is not None else 0,
        "authenticated": status.authenticated,
        "connections": connections,
        "subscriptions": {
            "open": status.subscriptions,
            "planned": plan.req_count if plan is not None else 0,
            "allowed": limits.max_subscriptions * max(connections, 1) if limits is not None else None,
        },
        "limits": None
        if limits is None
        else {
            "max_subscriptions": limits.max_subscriptions,
            "max_message_length": limits.max_message_length,
            "max_filters": limits.max_filters,
            "source": limits.source,
        },
        "events": status.events,
        "eose": status.eose,
        "notices": status.notices,
        "refused": status.closed,
        "garbage": status.garbage,
        "reconnects": status.reconnects,
        "connect_failures": status.connect_failures,
        "reqs_sent": status.reqs_sent,
        "closes_sent": status.closes_sent,
        "last_error": error,
    }
