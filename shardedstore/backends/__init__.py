"""The stores a layout is made of, and what they need (the lowest layer but ``errors``).

- ``registry``: the store types a config may name, each knowing its URL and location;
- ``zipstore``, ``zips``, ``remotezip``: copy-on-write zips, zip handles and Deflate64,
  zips at a URL;
- ``cache``: the bounded shard cache and the cached remote directory store;
- ``handles``, ``keys``: opening stores and read-only views of them; ``list_dir`` over
  a flat list of keys;
- ``filelock``, ``documents``: one writer per file; compare-and-swap of metadata;
- ``timeouts``, ``probe``, ``oserrors``, ``sync``: remote time limits, reaching a store
  for inspection, errors that name what the user wrote, Ctrl-C while waiting.
"""
