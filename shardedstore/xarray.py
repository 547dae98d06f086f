"""xarray opens a layout config: ``xr.open_datatree("layout.json", engine="shardedstore")``.

Registered under the entry point group ``xarray.backends`` as ``shardedstore``. The
config is read with :func:`shardedstore.open` (read-only, a local path or an fsspec
URL), and the store it describes is handed to xarray's own zarr backend, so every
option of ``engine="zarr"`` (``group``, ``consolidated``, ``zarr_format``, the decode
options; ``chunks`` is xarray's own) means exactly what it means there. Closing the
returned Dataset or DataTree (every one of them, for ``xr.open_groups``) closes the
store.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from xarray.backends import BackendEntrypoint

if TYPE_CHECKING:
    from xarray import Dataset, DataTree
    from xarray.backends.common import T_PathFileOrDataStore
    from zarr.abc.store import Store

    from shardedstore.store.sharded import ShardedStore

__all__ = ["ShardedStoreBackendEntrypoint"]

SNIFF_BYTES = 64 * 1024
"""How much of a ``.json`` file ``guess_can_open`` reads to tell a layout config."""

_FORMAT = re.compile(rb'"format"\s*:\s*"shardedstore"')
_LEGACY_MODULE = re.compile(rb'"module"\s*:\s*"shardedstore"')
_LEGACY_NAME = re.compile(rb'"name"\s*:\s*"ShardedStore"')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

_DECODE_OPTIONS = (
    "mask_and_scale",
    "decode_times",
    "concat_characters",
    "decode_coords",
    "drop_variables",
    "use_cftime",
    "decode_timedelta",
)
"""The decode options of ``xr.open_dataset`` (passed to xarray's zarr backend)."""


def _is_layout_config(head: bytes, whole: bool) -> bool:
    """Whether ``head`` (the start of a file, or all of it) is a shardedstore config."""
    if whole:
        try:
            config = json.loads(head)
        except ValueError:  # not JSON, or not UTF-8
            return False
        if not isinstance(config, dict):
            return False
        if config.get("format") == "shardedstore":
            return True
        # As shardedstore 0.3.x wrote them (shardedstore.config.legacy reads them).
        return config.get("module") == "shardedstore" and config.get("name") == "ShardedStore"
    if not head.lstrip().startswith(b"{"):
        return False
    return _FORMAT.search(head) is not None or (
        _LEGACY_MODULE.search(head) is not None and _LEGACY_NAME.search(head) is not None
    )


def _local_path(location: str) -> str | None:
    """The local file a path or ``file://`` URL names; None for other URLs."""
    if location.startswith("file://"):
        return location[len("file://") :]
    if _SCHEME.match(location) or "::" in location:
        return None
    return os.path.expanduser(location)


class _CloseWhenAllClosed:
    """Closes a store once every Dataset opened from it has been closed.

    ``xr.open_groups`` returns one Dataset per group and ``xr.open_datatree`` one node
    per group, all reading through one store: closing one of them must not cut off the
    others. Pickles (with the store), as the Datasets holding it do.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._open = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"_store": self._store, "_open": self._open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def attach(self, ds: Dataset) -> None:
        """Make ``ds.close()`` release ``ds``'s share of the store (once)."""
        with self._lock:
            self._open += 1
        ds.set_close(_Release(ds._close, self))  # after what the zarr backend set

    def release(self) -> None:
        """One Dataset is closed; close the store after the last one."""
        with self._lock:
            self._open -= 1
            last = self._open == 0
        if last:
            self._store.close()


class _Release:
    """The ``close`` of one Dataset sharing a store: its own closer, then its share."""

    def __init__(self, inner: Callable[[], None] | None, shared: _CloseWhenAllClosed) -> None:
        self._inner = inner
        self._shared: _CloseWhenAllClosed | None = shared

    def __call__(self) -> None:
        shared, self._shared = self._shared, None
        try:
            if self._inner is not None:
                self._inner()
        finally:
            if shared is not None:
                shared.release()


class ShardedStoreBackendEntrypoint(BackendEntrypoint):
    """Open a shardedstore layout config with xarray: ``engine="shardedstore"``.

    Installed as the xarray engine ``shardedstore``, so that a layout config file
    (local path or fsspec URL) opens as any Zarr store does::

        tree = xr.open_datatree("ds/layout.json", engine="shardedstore")
        ds = xr.open_dataset("ds/layout.json", engine="shardedstore",
                             group="simulation/fine", chunks={})
        groups = xr.open_groups("s3://bucket/ds/layout.json", engine="shardedstore")

    The config is read with :func:`shardedstore.open` (read-only) and the store it
    describes is opened by xarray's zarr backend, with the same options: ``group``,
    ``consolidated``, ``zarr_format``, ``use_zarr_fill_value_as_mask``,
    ``cache_members`` and the decode options (``mask_and_scale``, ``decode_times``,
    ``decode_timedelta``, ``use_cftime``, ``concat_characters``, ``decode_coords``,
    ``drop_variables``). ``chunks``, ``decode_cf`` and the other options of
    ``xr.open_dataset`` are xarray's own and work as with every engine
    (``chunks={}`` reads lazily with dask, as ``xr.open_zarr`` does by default).

    Options of this engine alone:

    - ``storage_options``: fsspec options for reading the config file at a URL (the
      stores it names carry their own options in the config);
    - ``timeout``: seconds to wait for the config at a URL (default: the environment
      variable ``SHARDEDSTORE_TIMEOUT``, else 30).

    Without ``engine=``, xarray picks this engine for a local ``.json`` file whose
    first 64 KiB say it is a shardedstore config; for a config at a URL, pass
    ``engine="shardedstore"``. A :class:`~shardedstore.ShardedStore` object is
    accepted too (and left open: it is the caller's).
    """

    description: ClassVar[str] = (
        "Open a shardedstore layout config (.json: one Zarr hierarchy spread over many "
        "stores) through xarray's zarr backend"
    )
    url: ClassVar[str] = "https://pypi.org/project/shardedstore/"
    supports_groups: ClassVar[bool] = True

    def guess_can_open(
        self,
        filename_or_obj: T_PathFileOrDataStore,
    ) -> bool:
        """Whether ``filename_or_obj`` is a local ``.json`` file holding a layout config.

        Reads at most the first 64 KiB: the whole file if it is that small (and then
        parses it), otherwise the start of it, where ``"format": "shardedstore"`` is.
        Never reads a URL: pass ``engine="shardedstore"`` for those.
        """
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        path = os.fspath(filename_or_obj)
        location = _local_path(os.fsdecode(path) if isinstance(path, bytes) else path)
        if location is None or not location.lower().endswith(".json"):
            return False
        try:
            with open(location, "rb") as f:
                head = f.read(SNIFF_BYTES + 1)
        except OSError:
            return False
        whole = len(head) <= SNIFF_BYTES
        return _is_layout_config(head[:SNIFF_BYTES], whole)

    # xarray passes the decode options it finds here (the signature below takes them
    # as ``**options``, forwarded to its zarr backend as they are).
    open_dataset_parameters: ClassVar[tuple[str, ...]] = (
        "filename_or_obj",
        *_DECODE_OPTIONS,
        "group",
        "consolidated",
        "zarr_format",
        "use_zarr_fill_value_as_mask",
        "cache_members",
        "storage_options",
        "timeout",
    )

    def open_dataset(
        self,
        filename_or_obj: T_PathFileOrDataStore,
        *,
        storage_options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Dataset:
        """Open one group of the layout as a Dataset (``xr.open_dataset``).

        Parameters
        ----------
        filename_or_obj
            The layout config: a local path or an fsspec URL (or a ShardedStore).
        storage_options
            fsspec options for reading the config file at a URL.
        timeout
            Seconds to wait for the config file at a URL.
        **options
            ``group`` (the group to open, the root by default), the decode options of
            ``xr.open_dataset`` (``mask_and_scale``, ``decode_times``,
            ``concat_characters``, ``decode_coords``, ``drop_variables``,
            ``use_cftime``, ``decode_timedelta``) and those of ``xr.open_zarr``
            (``consolidated``, ``zarr_format``, ``use_zarr_fill_value_as_mask``,
            ``cache_members``).

        Returns
        -------
        xarray.Dataset
            Closing it closes the store.
        """
        from xarray.backends.zarr import ZarrBackendEntrypoint

        opener = ZarrBackendEntrypoint().open_dataset
        return _through_zarr(opener, filename_or_obj, storage_options, timeout, options)

    def open_groups_as_dict(
        self,
        filename_or_obj: T_PathFileOrDataStore,
        *,
        storage_options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> dict[str, Dataset]:
        """Open every group below ``group`` as a Dataset (``xr.open_groups``).

        Parameters are those of :meth:`open_dataset` (but ``use_zarr_fill_value_as_mask``
        and ``cache_members``, which xarray's zarr backend takes for one group only).

        Returns
        -------
        dict of str to xarray.Dataset
            Keyed by group path (``"/"``, ``"/people"``, ...), relative to ``group``.
            The store is closed once every one of them has been closed.
        """
        from xarray.backends.zarr import ZarrBackendEntrypoint

        opener = ZarrBackendEntrypoint().open_groups_as_dict
        return _through_zarr(opener, filename_or_obj, storage_options, timeout, options)

    def open_datatree(
        self,
        filename_or_obj: T_PathFileOrDataStore,
        *,
        storage_options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> DataTree:
        """Open the layout, or the subtree at ``group``, as a DataTree (``xr.open_datatree``).

        Parameters are those of :meth:`open_groups_as_dict`.

        Returns
        -------
        xarray.DataTree
            ``tree.close()`` closes the store.
        """
        from xarray.backends.common import datatree_from_dict_with_io_cleanup

        groups = self.open_groups_as_dict(
            filename_or_obj, storage_options=storage_options, timeout=timeout, **options
        )
        return datatree_from_dict_with_io_cleanup(groups)


_Opened = TypeVar("_Opened", "Dataset", "dict[str, Dataset]")


def _through_zarr(
    opener: Callable[..., _Opened],
    filename_or_obj: object,
    storage_options: Mapping[str, Any] | None,
    timeout: float | None,
    options: dict[str, Any],
) -> _Opened:
    """``opener`` (a method of xarray's zarr backend) on the layout's store, read-only.

    A store opened here is closed once every Dataset returned has been closed.
    """
    store, owned = _open_store(filename_or_obj, storage_options, timeout)
    try:
        opened = opener(store, mode="r", **options)
    except BaseException:
        if owned:
            store.close()
        raise
    if owned:
        closer = _CloseWhenAllClosed(store)
        for ds in opened.values() if isinstance(opened, dict) else [opened]:
            closer.attach(ds)
    return opened


def _open_store(
    filename_or_obj: object, storage_options: Mapping[str, Any] | None, timeout: float | None
) -> tuple[ShardedStore, bool]:
    """The store to read, and whether it was opened here (and is to be closed here)."""
    from shardedstore.config.layout import open_config
    from shardedstore.errors import ConfigError
    from shardedstore.store.opencheck import check_base_exists
    from shardedstore.store.sharded import ShardedStore

    if isinstance(filename_or_obj, ShardedStore):
        return filename_or_obj, False
    if not isinstance(filename_or_obj, str | os.PathLike):
        raise TypeError(
            f"engine='shardedstore' opens a layout config file given by its path or URL, "
            f"not a {type(filename_or_obj).__name__}; for another store object use "
            "engine='zarr'"
        )
    location = os.fspath(filename_or_obj)
    if isinstance(location, bytes):
        location = os.fsdecode(location)
    if not _SCHEME.match(location):
        location = os.path.expanduser(location)
        if os.path.isdir(location):
            raise ConfigError(
                (),
                f"{location} is a directory; engine='shardedstore' opens a layout config "
                "file (.json): pass the config's path, or open a Zarr directory with "
                "engine='zarr'",
            )
    store = open_config(location, "r", storage_options=storage_options, timeout=timeout)
    try:
        check_base_exists(store, location)
    except BaseException:
        store.close()
        raise
    return store, True
