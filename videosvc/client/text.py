"""Text from a server, made safe for the two places the CLI puts it: a terminal and a file name.

The CLI trusts no server (SPEC §12). A filename or an error message can carry an escape sequence
(one that recolours or clears the terminal, retitles its window, or worse), a bidi override that
shows "gpj.mp4" for "mp4.jpg", or a path that writes outside the current folder.
"""

from __future__ import annotations

import unicodedata

#: Unicode categories that are not text to show: controls (C0, DEL and C1; ESC starts a terminal
#: command), format characters (bidi overrides, zero-width characters), lone surrogates (which
#: cannot even be encoded), and line and paragraph separators (which break the one line).
UNSHOWABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Longest saved name, in UTF-8 bytes. File systems hold 255, and ".part.etag" is added while downloading.
MAX_NAME_BYTES = 200


def _unshowable(char: str) -> bool:
    return unicodedata.category(char) in UNSHOWABLE


def printable(text: str) -> str:
    """`text`, safe to print: each unshowable character becomes "?", as ls shows them. It is one for
    one, so table columns still line up."""
    return "".join("?" if _unshowable(char) else char for char in text)


def file_name(name: str, fallback: str) -> str:
    """A name to save a file under, in the current folder, from a name a server chose (`fallback`,
    made safe the same way, if nothing of it is left). The result never starts with "." (no hidden
    file, no "..") and holds no separator, no NUL and no control character."""
    return _safe_name(name) or _safe_name(fallback) or "video.mp4"


def _safe_name(name: str) -> str:
    name = "".join("_" if char in "/\\" or _unshowable(char) else char for char in name)
    # Spaces too: " .bashrc" would become ".bashrc" once a shell or a user trims it.
    name = name.lstrip(". ")
    return _shortened(name) if len(name.encode()) > MAX_NAME_BYTES else name


def _shortened(name: str) -> str:
    """`name` cut to MAX_NAME_BYTES. The cut is in its stem, so its extension (.mp4) is kept."""
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 10:
        stem, dot, extension = name, "", ""
    room = MAX_NAME_BYTES - len(f"{dot}{extension}".encode())
    # Cut in bytes, dropping a character the cut splits.
    return stem.encode()[:room].decode(errors="ignore") + dot + extension
