"""Operator tools beside the gateway: `pushstr doctor`, `pushstr send-test` and `pushstr demo`.

They sit above the API layer and below the command line: each builds the same components `serve` builds (the
settings, the transports, the store, a whole `Service` for the demo) and uses them once, so what they report is
what the gateway would meet.
"""
