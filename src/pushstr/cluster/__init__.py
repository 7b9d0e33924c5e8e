"""Several `pushstr serve` processes on one PostgreSQL database, splitting the pubkeys between them by shards.

`registry.shards` says which shard a pubkey is in and which shards this instance holds; `leases` keeps the shard leases
(fair shares, renewal, takeover of a dead instance's shards); `changes` brings registry changes made through
other instances into this one; `member` ties them to the service (what happens when shards come and go).
"""
