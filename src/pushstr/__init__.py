"""pushstr: a self-hostable push-notification gateway for Nostr."""

__version__ = "0.1.0"
