"""Set a member of a JSON object in place, leaving every other byte of the text as it was.

``json.dumps`` of the parsed file would re-indent, re-order and re-escape the whole file,
turning a one-line promotion into a noisy diff; no maintained library edits JSON text while
keeping its formatting (tomlkit's counterpart for JSON does not exist in the stdlib or our
pins), so this scans value positions with the stdlib's own string and value decoders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

__all__ = ["JsonEditError", "set_member"]

_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


class JsonEditError(ValueError):
    """The path does not lead to an object, or the edit would change more than one member."""


@dataclass
class _Node:
    start: int
    end: int
    # Only objects: member name -> (start of its name, its value).
    members: dict[str, tuple[int, _Node]] | None = field(default=None)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _value(text: str, index: int) -> _Node:
    index = _skip(text, index)
    if text.startswith("{", index):
        return _object(text, index)
    _, end = _DECODER.raw_decode(text, index)
    return _Node(index, end)


def _object(text: str, start: int) -> _Node:
    members: dict[str, tuple[int, _Node]] = {}
    index = _skip(text, start + 1)
    if text.startswith("}", index):
        return _Node(start, index + 1, members)
    while True:
        if not text.startswith('"', index):
            raise JsonEditError(f"expected a member name at offset {index}")
        name_start = index
        name, index = scanstring(text, index + 1)
        index = _skip(text, index)
        if not text.startswith(":", index):
            raise JsonEditError(f"expected ':' at offset {index}")
        node = _value(text, index + 1)
        members[name] = (name_start, node)
        index = _skip(text, node.end)
        if text.startswith("}", index):
            return _Node(start, index + 1, members)
        if not text.startswith(",", index):
            raise JsonEditError(f"expected ',' or '}}' at offset {index}")
        index = _skip(text, index + 1)


def _line_indent(text: str, offset: int) -> str:
    line_start = text.rfind("\n", 0, offset) + 1
    return text[line_start:offset]


def set_member(text: str, path: Sequence[str], name: str, value: Any) -> str:
    """Return ``text`` with ``name`` set to ``value`` in the object at ``path``.

    An existing member's value is replaced where it stands; a new member goes after the
    object's last member, on its own line, with that member's indentation. Nothing else in
    the text changes.

    Parameters
    ----------
    text:
        A JSON document whose root is an object.
    path:
        Member names from the root to the object to edit.
    name:
        The member to set.
    value:
        Its new value (JSON-serializable; written compactly on one line).

    Returns
    -------
    str
        The edited text, which parses to the original document with that one member set.

    Raises
    ------
    JsonEditError
        If ``path`` does not lead to a non-empty object.
    """
    node = _value(text, 0)
    for step in path:
        if node.members is None or step not in node.members:
            raise JsonEditError(f"no object member {step!r} on the path {'.'.join(path)}")
        node = node.members[step][1]
    if node.members is None:
        raise JsonEditError(f"{'.'.join(path)} is not an object")
    rendered = json.dumps(value, ensure_ascii=False)
    if name in node.members:
        target = node.members[name][1]
        edited = text[: target.start] + rendered + text[target.end :]
    elif node.members:
        last_name_start, last = max(node.members.values(), key=lambda member: member[1].end)
        indent = _line_indent(text, last_name_start)
        if indent.strip():
            indent = " "  # the last member shares its line: stay on one line too
            insertion = f", {json.dumps(name)}: {rendered}"
        else:
            insertion = f",\n{indent}{json.dumps(name)}: {rendered}"
        edited = text[: last.end] + insertion + text[last.end :]
    else:
        raise JsonEditError(f"{'.'.join(path)} is empty: add a member by hand first")
    expected = json.loads(text)
    cursor = expected
    for step in path:
        cursor = cursor[step]
    cursor[name] = value
    if json.loads(edited) != expected:  # a scanner bug, never a user error
        raise JsonEditError("the edit changed more than the member; cdk.json left unchanged")
    return edited
