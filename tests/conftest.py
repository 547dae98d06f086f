"""Shared fixtures: an in-memory array-shard factory, a routing oracle, an S3 server."""

from __future__ import annotations

import gc
import os
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from zarr.storage import MemoryStore

from shardedstore import ShardedStore


@dataclass(eq=True)
class MemoryShardFactory:
    """Array shards in memory: one MemoryStore per chunk index, made on demand.

    Listable (it knows which shards it made) and sync-capable, like the directory factory.
    """

    stores: dict[str, MemoryStore] = field(default_factory=dict)
    supports_sync = True

    def __call__(self, chunk_index: str) -> MemoryStore:
        if chunk_index not in self.stores:
            self.stores[chunk_index] = MemoryStore()
        return self.stores[chunk_index]

    def existing_chunk_indices(self) -> list[str]:
        return [index for index, store in self.stores.items() if store._store_dict]


_INDEX = r"(?:0|[1-9][0-9]*)"


def locate(store: ShardedStore, key: str) -> tuple[str, str | None, str]:
    """Where a key should physically live, computed independently of the router.

    Returns ``(node, chunk_index, inner_key)``; node ``""`` is the base.
    """
    for mount in store.mounts:
        if key.startswith(mount + "/"):
            return mount, None, key[len(mount) + 1 :]
    for array, (dims, _) in store.array_shards.items():
        if not key.startswith(array + "/"):
            continue
        rest = key[len(array) + 1 :]
        m = re.fullmatch(rf"c([/.])({_INDEX}(?:\1{_INDEX})*)", rest)
        if m:
            sep, parts = m.group(1), m.group(2).split(m.group(1))
            prefix = "c"
        elif re.fullmatch(rf"{_INDEX}(?:/{_INDEX})*", rest):
            sep, parts, prefix = "/", rest.split("/"), ""
        elif re.fullmatch(rf"{_INDEX}(?:\.{_INDEX})*", rest):
            sep, parts, prefix = ".", rest.split("."), ""
        else:
            return "", None, key
        if len(parts) < dims:
            return "", None, key
        index, remaining = ".".join(parts[:dims]), parts[dims:]
        if prefix:
            inner = "c" + (sep + sep.join(remaining) if remaining else "")
        else:
            inner = sep.join(remaining) if remaining else "0"
        return array, index, inner
    return "", None, key


@dataclass(frozen=True)
class S3Server:
    """moto's S3 server on 127.0.0.1: a real S3 HTTP endpoint for s3fs and obstore."""

    endpoint: str

    @property
    def storage_options(self) -> dict[str, object]:
        """fsspec (s3fs) options; credentials come from the environment."""
        return {"endpoint_url": self.endpoint}

    @property
    def obstore_config(self) -> dict[str, object]:
        return {"endpoint": self.endpoint, "region": "us-east-1"}

    @property
    def obstore_client_options(self) -> dict[str, object]:
        return {"allow_http": True}

    def new_bucket(self) -> str:
        import boto3

        name = f"bucket-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(
            Bucket=name
        )
        return name


def fake_aws_credentials() -> None:
    """Credentials for moto, unless the environment already has some."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server for the test session (as s3fs's own tests do)."""
    from moto.server import ThreadedMotoServer

    fake_aws_credentials()
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.new_bucket()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what imports and collection made out of the garbage collector's way: its full
    passes then look only at what the tests make (the suite holds many objects by the
    end, and tests that call ``gc.collect()`` to drop a store paid for all of them)."""
    gc.freeze()
