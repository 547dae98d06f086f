"""OME-Zarr images as layouts: one store per resolution level, the full one sharded on t.

An OME-Zarr image is a group whose ``multiscales`` metadata lists its resolution levels
(one array each, ``datasets[i].path``) and its axes (``t, c, z, y, x``, time first).
:func:`ome_zarr_layout` proposes the layout microscopists ask for: the full resolution
split into one array shard per time point, every other level mounted in a store of its
own, and the group's own metadata in the base.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from zarr.abc.store import Store

from shardedstore.config.layout import FORMAT, FORMAT_VERSION
from shardedstore.errors import ArgumentError
from shardedstore.shards.importing import open_source

__all__ = ["ome_zarr_layout"]

_SUFFIX = {"directory": ".zarr", "zip": ".zarr.zip"}


def _multiscales(attributes: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The first ``multiscales`` entry of OME attributes (NGFF 0.4, or 0.5 under ``ome``)."""
    ome = attributes.get("ome")
    found = (ome if isinstance(ome, Mapping) else attributes).get("multiscales")
    if not isinstance(found, Sequence) or not found or not isinstance(found[0], Mapping):
        raise ArgumentError(
            f"{where} has no OME-Zarr multiscales metadata (attributes 'multiscales', or "
            "'ome': {'multiscales': ...}); give the image's group, e.g. image.ome.zarr"
        )
    first: Mapping[str, Any] = found[0]
    return first


def _names(multiscales: Mapping[str, Any], where: str) -> tuple[list[str], list[str]]:
    """The axis names and the level paths of a multiscales entry."""
    axes = multiscales.get("axes")
    datasets = multiscales.get("datasets")
    if not isinstance(axes, Sequence) or not isinstance(datasets, Sequence) or not datasets:
        raise ArgumentError(f"{where}: its multiscales metadata lacks 'axes' or 'datasets'")
    names = [str(a.get("name")) if isinstance(a, Mapping) else str(a) for a in axes]
    paths = [str(d.get("path")) if isinstance(d, Mapping) else "" for d in datasets]
    if not all(paths):
        raise ArgumentError(f"{where}: a dataset of its multiscales metadata has no 'path'")
    return names, paths


def ome_zarr_layout(
    image: Mapping[str, Any] | str | os.PathLike[str] | Store,
    *,
    kind: Literal["directory", "zip"] = "directory",
    shard_axis: str | None = "t",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Propose a layout for an OME-Zarr image: a store per level, the full one sharded.

    The full resolution (the first dataset of the image's ``multiscales``) gets one
    array shard per index along ``shard_axis`` (``{path}/{chunk}.zarr``), every other
    level is mounted in its own store (``{path}.zarr``), and the image's group metadata
    stays in the base (``base.zarr``). Paths are relative to the config's folder: save
    the result as ``FOLDER/layout.json`` (``json.dump``) and open it with
    ``shardedstore.open("FOLDER/layout.json", mode="r+")``, or copy an image in with
    :func:`import_zarr`.

    Parameters
    ----------
    image
        The image: its group's attributes (``{"multiscales": [...]}`` as in NGFF 0.4,
        or ``{"ome": {"multiscales": [...]}}`` as in 0.5), or the image itself (a
        directory, a zip file, a URL or a zarr store) to read them from.
    kind
        ``"directory"`` or ``"zip"`` stores (``.zarr.zip``).
    shard_axis
        The axis whose indices each get an array shard; it must be the first axis
        (array shards split leading dimensions), as time is in OME-Zarr. None: no array
        shards, the full resolution is mounted like the other levels.
    storage_options
        fsspec options for an ``image`` given as a URL.

    Returns
    -------
    dict
        A layout config (format version 1).

    Raises
    ------
    ArgumentError
        If the image has no multiscales metadata, or ``shard_axis`` is not its first
        axis; the message says what to give instead.

    Examples
    --------
    >>> attributes = {"multiscales": [{"axes": ["t", "c", "z", "y", "x"],
    ...     "datasets": [{"path": "0"}, {"path": "1"}]}]}
    >>> layout = ome_zarr_layout(attributes, kind="zip")
    >>> layout["array_shards"]
    {'0': {'dims': 1, 'store': {'type': 'zip', 'path': '0/{chunk}.zarr.zip'}}}
    >>> layout["mounts"]
    {'1': {'type': 'zip', 'path': '1.zarr.zip'}}
    """
    if kind not in _SUFFIX:
        raise ArgumentError(f"kind must be 'directory' or 'zip', got {kind!r}")
    if isinstance(image, Mapping):
        where = "the attributes given"
        attributes: Mapping[str, Any] = image
    else:
        import zarr

        where = os.fspath(image) if not isinstance(image, Store) else str(image)
        group = zarr.open_group(open_source(image, storage_options), mode="r")
        attributes = group.attrs.asdict()
    axes, paths = _names(_multiscales(attributes, where), where)
    suffix = _SUFFIX[kind]

    def store(location: str) -> dict[str, str]:
        if kind == "zip":
            return {"type": "zip", "path": location + suffix}
        return {"type": "local", "root": location + suffix}

    mounted = paths
    config: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "base": {"type": "local", "root": "base.zarr"},
    }
    if shard_axis is not None:
        if not axes or axes[0] != shard_axis:
            position = (
                f"axis {axes.index(shard_axis)} of {tuple(axes)}"
                if shard_axis in axes
                else f"not an axis of {tuple(axes)}"
            )
            raise ArgumentError(
                f"{where}: shard_axis {shard_axis!r} is {position}; array shards split "
                "the leading dimensions, so give the first axis, or shard_axis=None to "
                "mount every level whole"
            )
        mounted = paths[1:]
        config["array_shards"] = {
            paths[0]: {"dims": 1, "store": store(f"{paths[0]}/{{chunk}}")},
        }
    if mounted:
        config["mounts"] = {path: store(path) for path in mounted}
    return config
