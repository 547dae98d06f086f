"""A Griffe extension for the API reference: Sphinx roles in docstrings as code spans.

The docstrings are numpydoc, written for Python's help() and Sphinx, so they cross-reference
with roles (``:class:`~zarr.storage.ZipStore```). mkdocstrings renders Markdown, where a role
would show as is; this turns each into a code span (```ZipStore```; a ``~`` keeps the last
name, as Sphinx does). Loaded by mkdocs.yml, never by the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`([^`]+)`")


def _code_span(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    titled = re.fullmatch(r"(.+?)\s*<[^>]+>", target)
    if titled:
        target = titled.group(1)
    elif target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


class RstRoles(griffe.Extension):
    """Rewrite Sphinx roles to Markdown code spans in every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code_span, obj.docstring.value)
