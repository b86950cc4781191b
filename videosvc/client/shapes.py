"""What the command line reads of the server's JSON, checked before anything uses it.

The CLI trusts no server (SPEC §12): an answer that is not JSON, or lacks a field, or has one of
the wrong type, becomes `Malformed` here. The CLI then prints one line and exits 5. Without this
check it would fail later with a KeyError or TypeError, in the middle of formatting a table.
Only the fields the CLI reads are checked. The rest pass through to `--json` output as they came.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any


class Malformed(Exception):
    """The server answered, but not with what the API says it answers."""


_MISSING = object()

# The JSON kinds a field may have.
STRING, INTEGER, BOOLEAN, OBJECT, ARRAY, NULL = "string", "integer", "boolean", "object", "array", "null"
NUMBER = "number"  # a finite one; an integer is a number too

VIDEO: Mapping[str, frozenset[str]] = {
    "id": frozenset({STRING}),
    "filename": frozenset({STRING}),
    "processing": frozenset({BOOLEAN}),
    "processingSuccess": frozenset({BOOLEAN, NULL}),
    "processingError": frozenset({STRING, NULL}),
    "progress": frozenset({INTEGER, NUMBER, NULL}),
    "size": frozenset({INTEGER}),
    "width": frozenset({INTEGER}),
    "height": frozenset({INTEGER}),
    "duration": frozenset({INTEGER, NUMBER, NULL}),
    "createdAt": frozenset({STRING}),
    "contentUrl": frozenset({STRING}),
    "originalWidth": frozenset({INTEGER, NULL}),
    "originalHeight": frozenset({INTEGER, NULL}),
    "originalSize": frozenset({INTEGER, NULL}),
    "job": frozenset({OBJECT, NULL}),
}
JOB: Mapping[str, frozenset[str]] = {
    "state": frozenset({STRING}),
    "width": frozenset({INTEGER}),
    "height": frozenset({INTEGER}),
    "error": frozenset({STRING, NULL}),
}
#: A rendition of the HLS package (servers from before HLS send no `renditions`: none is listed).
RENDITION: Mapping[str, frozenset[str]] = {
    "width": frozenset({INTEGER}),
    "height": frozenset({INTEGER}),
    "bandwidth": frozenset({INTEGER, NULL}),
    "state": frozenset({STRING}),
    "error": frozenset({STRING, NULL}),
}
#: The poster and storyboard's state (servers from before pictures send none).
PICTURES: Mapping[str, frozenset[str]] = {"state": frozenset({STRING}), "error": frozenset({STRING, NULL})}
PAGE: Mapping[str, frozenset[str]] = {"items": frozenset({ARRAY}), "next": frozenset({STRING, NULL})}


def decode(body: bytes | str) -> object:
    """The JSON in `body`. Deep nesting is malformed too: "[[[[..." raises RecursionError, not ValueError."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise Malformed(f"not JSON ({type(e).__name__})") from None


def is_uuid(text: str) -> bool:
    """Whether `text` is an id as the server writes them: a UUID, 36 characters (any case)."""
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def video(value: object) -> dict[str, Any]:
    """A video (GET /file/{id}/, a catalogue item, a live event), with its job if it has one."""
    checked = _fields(value, VIDEO, "the video")
    # The API's ids are UUIDs (its routes take no other). Checking that here keeps every id the CLI
    # uses safe as a URL path segment, in a file name and on a terminal.
    if not is_uuid(checked["id"]):
        raise Malformed(f"the video's id {checked['id']!r} is not a UUID")
    if checked["job"] is not None:
        _fields(checked["job"], JOB, "the video's job")
    renditions = checked.get("renditions", [])
    if not isinstance(renditions, list):
        raise Malformed(f"the video's 'renditions' is {kind(renditions)}, not array")
    for rendition in renditions:
        _fields(rendition, RENDITION, "a rendition")
    for name in ("playbackUrl", "posterUrl", "storyboardUrl"):
        if kind(checked.get(name, _MISSING)) not in (STRING, NULL, "missing"):
            raise Malformed(f"the video's {name!r} is {kind(checked[name])}, not string")
    if checked.get("posterUrl") is not None and kind(checked.get("storyboardUrl")) != STRING:
        raise Malformed("the video has a 'posterUrl' but no 'storyboardUrl'")
    pictures = checked.get("pictures")
    if pictures is not None:
        _fields(pictures, PICTURES, "the video's pictures")
    return checked


def page(value: object) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the catalogue: its videos, and the cursor of the next page (None: the last one)."""
    checked = _fields(value, PAGE, "the catalogue page")
    return [video(item) for item in checked["items"]], checked["next"]


def _fields(value: object, expected: Mapping[str, frozenset[str]], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is {kind(value)}, not an object")
    for name, kinds in expected.items():
        found = kind(value.get(name, _MISSING))
        if found not in kinds and not (found == INTEGER and NUMBER in kinds):
            raise Malformed(f"{what}'s {name!r} is {found}, not {' or '.join(sorted(kinds))}")
    return value


def kind(value: object) -> str:
    """The JSON kind of a decoded value. NaN and Infinity are not numbers here: Python's json reads
    them, but they are not JSON, and round() fails on them."""
    if value is _MISSING:
        return "missing"
    if value is None:
        return NULL
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER if math.isfinite(value) else "not a finite number"
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return ARRAY
    if isinstance(value, dict):
        return OBJECT
    return type(value).__name__
