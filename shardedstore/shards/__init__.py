"""Shard by shard: the one enumeration of a layout's shards, what a shard's own keys are, transforms (map_shards, convert) and their outputs, verification."""
