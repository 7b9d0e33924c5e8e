"""Relay I/O: outbound connections (one task each), the pool that drives them, relay limits and the planner.

The inbound endpoint (clients publishing to pushstr itself) lives in `endpoint`.
"""

from pushstr.relays.connection import RelayConnection, RelayState, RelayStatus
from pushstr.relays.limits import RelayLimits
from pushstr.relays.planner import Interest, Plan, PlanDiff, Planner, RelayPlan, Subscription, diff_plans
from pushstr.relays.pool import RelayPool

__all__ = [
    "Interest",
    "Plan",
    "PlanDiff",
    "Planner",
    "RelayConnection",
    "RelayLimits",
    "RelayPlan",
    "RelayPool",
    "RelayState",
    "RelayStatus",
    "Subscription",
    "diff_plans",
]
