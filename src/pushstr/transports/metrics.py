"""Prometheus metrics the transports count themselves: credentials minted and endpoints refused."""

from __future__ import annotations

from prometheus_client import Counter

CREDENTIALS = Counter(
    "pushstr_push_credentials_total", "Provider credentials minted (APNs JWTs, FCM OAuth tokens)", ["transport"]
)
SSRF_REFUSED = Counter(
    "pushstr_push_ssrf_refused_total", "Web Push endpoints refused because they point inside the network", ["app"]
)
