"""The ``shardedstore`` command line: a thin shell over the library.

``shardedstore.cli:main`` is the console script."""

from shardedstore.cli.main import main

__all__ = ["main"]
