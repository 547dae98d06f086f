"""Remote calls shardedstore makes itself have time limits (issue 9, item 6).

``shardedstore info http://127.0.0.1:PORT/layout.json`` against a server that accepts
and never answers hung for more than 5 minutes. Every test here talks to a real TCP
server on 127.0.0.1: one that accepts connections and never answers, or a real HTTP
server serving a config.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import shardedstore
from shardedstore import ShardedStore, array_shard_template_store
from shardedstore.backends.timeouts import ENV_VAR, resolve_timeout, within
from shardedstore.errors import RemoteTimeoutError

LIMIT = 5.0  # seconds a call with a 1 s time limit may take in all, on a loaded machine


@pytest.fixture
def silent_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: a TCP server that accepts connections, never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.05)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)  # held open, never read from or written to

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder under tmp_path served over HTTP on 127.0.0.1: (folder, its URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _config(tmp_path: Path) -> dict[str, object]:
    return {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": str(tmp_path / "base.zarr")},
        "array_shards": {
            "t": {"dims": 1, "store": {"type": "local", "root": str(tmp_path / "t/{chunk}.zarr")}}
        },
    }


# ------------------------------------------------------- fetching the config


def test_open_from_a_silent_server_fails_naming_the_url(silent_server: str) -> None:
    url = f"{silent_server}/ds/layout.json"
    start = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        shardedstore.open(url, timeout=1)
    assert time.monotonic() - start < LIMIT
    assert isinstance(caught.value, RemoteTimeoutError)
    assert caught.value.url == url
    assert caught.value.timeout == 1
    message = str(caught.value)
    assert url in message
    assert "no answer within 1 s" in message
    assert "timeout=" in message
    assert ENV_VAR in message


def test_the_environment_sets_the_default_time_limit(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "0.5")
    url = f"{silent_server}/layout.json"
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match=r"no answer within 0\.5 s"):
        shardedstore.open(url)
    assert time.monotonic() - start < LIMIT


def test_the_cli_fails_naming_the_url(silent_server: str) -> None:
    # The original repro: `shardedstore info URL` hung for more than 5 minutes.
    url = f"{silent_server}/layout.json"
    start = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shardedstore"), "info", url],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, ENV_VAR: "1"},
        timeout=60,
    )
    assert time.monotonic() - start < 30  # includes starting Python and importing zarr
    assert result.returncode == 1, result
    assert url in result.stderr
    assert "no answer within 1 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_served_over_http_opens(
    http_folder: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = http_folder
    (folder / "layout.json").write_text(json.dumps(_config(tmp_path)))
    monkeypatch.setenv(ENV_VAR, "10")
    store = shardedstore.open(f"{url}/layout.json", timeout=10)
    assert store == ShardedStore.from_config(_config(tmp_path), read_only=True)
    assert shardedstore.open(f"{url}/layout.json") == store  # the environment's limit
    with pytest.raises(FileNotFoundError):
        shardedstore.open(f"{url}/missing.json", timeout=10)


def test_save_config_to_a_silent_server_fails_naming_the_url(
    silent_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    store = ShardedStore.from_config(_config(tmp_path))
    url = f"{silent_server}/layout.json"
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match=f"writing the config {url}"):
        store.save_config(url)
    assert time.monotonic() - start < LIMIT


# ------------------------------------------------------ listing array shards


def test_listing_array_shards_on_a_silent_server_fails_naming_the_url(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    factory = array_shard_template_store({"type": "fsspec", "url": f"{silent_server}/t/{{chunk}}"})
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match=f"listing {silent_server}/t"):
        factory.existing_chunk_indices()
    assert time.monotonic() - start < LIMIT


# -------------------------------------------------------------- the settings


def test_time_limit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_timeout() == 30
    assert resolve_timeout(2.5) == 2.5
    assert resolve_timeout(float("inf")) is None  # no limit
    monkeypatch.setenv(ENV_VAR, "7")
    assert resolve_timeout() == 7
    assert resolve_timeout(3) == 3  # the keyword wins
    for value in ("none", "inf", "off"):
        monkeypatch.setenv(ENV_VAR, value)
        assert resolve_timeout() is None
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(ENV_VAR, bad)
        with pytest.raises(ValueError, match=f"^{ENV_VAR}={bad!r}: expected a number of seconds"):
            resolve_timeout()
    monkeypatch.delenv(ENV_VAR)
    for value in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
            resolve_timeout(value)


async def test_within_cancels_what_it_waited_for() -> None:
    import asyncio

    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(RemoteTimeoutError, match=r"^probing s3://b/x: no answer within 0\.1 s"):
        await within(hang(), "probing", "s3://b/x", 0.1)
    assert cancelled.is_set()
    assert await within(asyncio.sleep(0, "done"), "probing", "s3://b/x", 1) == "done"


def test_the_error_pickles() -> None:
    import pickle

    error = RemoteTimeoutError("fetching the config", "https://h/l.json", 2.0)
    back = pickle.loads(pickle.dumps(error))
    assert isinstance(back, RemoteTimeoutError)
    assert (str(back), back.url, back.timeout) == (str(error), error.url, error.timeout)
