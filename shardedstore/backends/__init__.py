"""Store types and what they need: the registry of store types a config may name, copy-on-write and remote zips, the shard cache, locks, timeouts."""
