"""Numbers a client sends (headers, query strings): ASCII digits only, bounded before conversion.

Python's `int()` takes `1_000`, surrounding spaces and other scripts' digits, and
raises ValueError past 4300 digits: each would be a surprise or a 500. Every
number from a client goes through here, and becomes a 4xx when it is not one.
"""

from __future__ import annotations

#: Digits of the largest count a client may send: 10**19 bytes is more than any disk.
MAX_DIGITS = 19


def parse_count(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """A non-negative integer of ASCII digits (no sign, no spaces, no `_`), or None."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)
