"""Shard by shard (above ``config``).

- ``listing``: the one enumeration of a layout's shards (``store.shards()``);
- ``source``: the keys a reader of the layout reaches through one shard;
- ``transforms``: ``map_shards`` and the built-in copies (zip, directory, URL), with
  ``prefixes`` (output names), ``outputlock`` (one conversion per output) and
  ``verify`` (by content, after a conversion).
"""
