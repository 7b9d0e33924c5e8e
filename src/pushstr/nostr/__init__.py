"""Pure Nostr protocol code: no I/O, no global state beyond small caches.

Everything above this package (relays, dialects, engine) speaks in terms of `Event`, `Keys` and the typed
exceptions in `errors`, never in raw JSON or raw crypto calls.
"""
