"""Display names: what a client calls its file, made safe to show anywhere (never used as a path)."""

from __future__ import annotations

import re
import unicodedata

MAX_FILENAME_CHARS = 255
_UNSAFE_CHARS = re.compile(r"[\"\\/]")


def clean_filename(name: str | None) -> str:
    """A display name: no path, no control characters or quotes, bounded length."""
    if not name:
        return ""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Control and format characters (C0, C1, bidi overrides, zero-width) would let a
    # name pose as another in a listing or a log: each becomes "_".
    name = "".join("_" if unicodedata.category(c) in ("Cc", "Cf") else c for c in name)
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    # Surrogates from undecodable bytes would break JSON encoders downstream.
    name = name.encode("utf-8", "replace").decode("utf-8")
    if len(name) > MAX_FILENAME_CHARS:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = name[: MAX_FILENAME_CHARS - len(keep) - 1] + "." + keep if keep else name[:MAX_FILENAME_CHARS]
    return name
