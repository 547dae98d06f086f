"""Layouts as JSON: load and dump, the JSON Schema, strict parsing, configs of shardedstore 0.3."""
