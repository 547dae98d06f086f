"""Native engines for layouts: zarrs and TensorStore on a layout's local parts (above ``store``).

- ``pipeline``: :class:`ShardedCodecPipeline`, zarr's codec pipeline for layouts, and
  :func:`use_engine`, which selects it in zarr's config;
- ``engines``: which engine serves what, and whether it is installed;
- ``zarrs_engine``, ``ts_engine``: each engine on local directories;
- ``groups``: a request split by the local directory each chunk lives in;
- ``fence``: no chunk write of a failed request lands after it raised;
- ``regions`` (pure): chunk keys to coordinates, chunks to boxes.
"""
