"""Config files as JSON, read strictly: no key twice in one object, no nesting bombs.

Python's ``json`` module keeps the last of two equal keys (``{"root": "a", "root":
"b"}`` reads as ``"b"``) where other readers keep the first or refuse, so one config
could open two different layouts. Here a repeated key is a ConfigError naming it and
its JSON path. Checking costs a few passes of ``str.count`` over the text and one walk
over the parsed value; the exact (slower) parse that finds the repeated key runs only
when the counts say there is one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shardedstore.errors import ConfigError

__all__ = ["parse_config_json"]

# The end of an object key: its closing quote, optional whitespace, the colon.
_KEY_END = re.compile(r'"\s*:')


def _key_ends(text: str) -> int:
    """An upper bound on the number of object keys in valid JSON ``text``."""
    direct = text.count('":')
    # Every colon is a key's end or inside a string. If each is either directly after
    # a quote or part of '://', no key has whitespace before its colon and ``direct``
    # counts every key (strings may add more, never fewer).
    if text.count(":") == direct + text.count("://"):
        return direct
    return len(_KEY_END.findall(text))


def _keys_in(value: Any) -> int:
    """How many keys all the objects in a parsed JSON value hold."""
    total, stack = 0, [value]
    while stack:
        node = stack.pop()
        items = node.values() if type(node) is dict else node
        if type(node) is dict:
            total += len(node)
        for item in items:
            if type(item) is dict or type(item) is list:
                stack.append(item)
    return total


def _path_to(root: Any, target: object) -> tuple[str | int, ...]:
    """The JSON path of the object ``target`` (by identity) inside ``root``."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        pairs = node.items() if type(node) is dict else enumerate(node)
        stack.extend((item, (*path, key)) for key, item in pairs if type(item) in (dict, list))
    return ()


def _first_repeated_key(text: str) -> tuple[dict[str, Any], str, Any] | None:
    """Parse ``text`` noting the first object with a key twice: (object, key, value)."""
    found: list[tuple[dict[str, Any], str]] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        if len(made) != len(pairs) and not found:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    found.append((made, key))
                    break
                seen.add(key)
        return made

    value = json.loads(text, object_pairs_hook=pairs_hook)
    return (*found[0], value) if found else None


def parse_config_json(text: str, source: str) -> Any:
    """The JSON value of a config file's ``text``; ``source`` names the file in errors.

    Raises
    ------
    ConfigError
        If the text is not JSON, nests too deeply for Python to parse, or repeats a key
        in one object (the error's path is that key's).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError((), f"{source} is not valid JSON: {error}") from None
    except RecursionError:
        raise ConfigError(
            (), f"{source}: JSON nested too deeply to read; a layout config is a few levels deep"
        ) from None
    if _key_ends(text) == _keys_in(value):
        return value
    repeated = _first_repeated_key(text)
    if repeated is None:  # the counts met a string holding '":'
        return value
    holder, key, value = repeated
    raise ConfigError(
        (*_path_to(value, holder), key),
        f"the key {key!r} appears twice in one JSON object; JSON readers disagree on which "
        "value counts (Python's json takes the last, others the first), so remove or "
        "rename one",
    )
