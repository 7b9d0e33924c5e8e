"""Delivery: batch → render once → dispatch (bounded queues, retries, pruning) → transports."""
