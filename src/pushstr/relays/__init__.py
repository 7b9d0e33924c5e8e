"""Relay I/O: outbound connections (one task per relay), the pool that drives them, and the subscription planner.

The inbound endpoint (clients publishing to pushstr itself) lives in `endpoint`.
"""

from pushstr.relays.connection import RelayConnection, RelayState, RelayStatus
from pushstr.relays.planner import Interest, Plan, PlanDiff, Planner, Subscription, diff_plans
from pushstr.relays.pool import RelayPool

__all__ = [
    "Interest",
    "Plan",
    "PlanDiff",
    "Planner",
    "RelayConnection",
    "RelayPool",
    "RelayState",
    "RelayStatus",
    "Subscription",
    "diff_plans",
]
