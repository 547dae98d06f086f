"""Arrays as tables (above ``shards``): ``stats`` (statistics of one chunk, pure),
``tasks`` (one shard and array: listed, fingerprinted, read), ``chunks``
(``chunk_table``), ``parquet`` (``write_chunk_table``), ``planner`` (``chunk_tasks``,
``map_chunks``), ``prune`` (which chunks a filter can skip, pure), ``statistics``
(chunk statistics checked against their shards), ``values`` (``values``), ``datasets``
(pyarrow datasets engines scan with pushdown) and ``sql`` (DuckDB, DataFusion)."""
