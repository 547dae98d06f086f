"""Arrays as tables: one row per stored chunk, with statistics, as Arrow or Parquet."""
