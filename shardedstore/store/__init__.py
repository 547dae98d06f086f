"""ShardedStore: pure routing and shard metadata, array-shard factories, overlap checks, inline I/O and read-ahead."""
