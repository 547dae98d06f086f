"""Layouts as JSON (above ``store``): ``layout`` (load, dump, open, save), ``schema``
(the shipped JSON Schema), ``strictjson`` (strict parsing) and ``legacy`` (configs of
shardedstore 0.3)."""
