"""``ShardedStore`` and what it is made of (above ``backends``).

- ``routing`` (pure: which store holds a key) and ``metadata`` (pure: an array shard's
  own metadata);
- ``factories``: how an array shard's store is made from its chunk index;
- ``locations``: where each store keeps its data, and overlap checks at construction;
- ``inline``, ``readahead``: inline or threaded I/O; reading the next shards ahead;
- ``sharded``: the store itself; ``mapping``: a synchronous mapping view;
- ``opencheck``: what opening a layout checks against its data.
"""
