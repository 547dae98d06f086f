"""Arrays as tables (above ``shards``): ``stats`` (statistics of one chunk, pure),
``tasks`` (one shard and array: listed, fingerprinted, read), ``chunks``
(``chunk_table``) and ``parquet`` (``write_chunk_table``)."""
