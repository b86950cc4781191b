"""HMAC signatures for what the service hands out and later takes back: content links and page cursors.

A signed value cannot be forged or altered by a client; an expired link or a
cursor signed by an earlier process (when no `url_signing_key` is set) is
refused like a forged one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any


class BadSignature(Exception):
    """Forged, altered, or signed with another key."""


class Expired(Exception):
    """Genuine, but past its expiry."""


class Signer:
    def __init__(self, key: str) -> None:
        # No key configured: one for this process only.
        self._key = key.encode() if key else secrets.token_bytes(32)

    def _tag(self, purpose: str, message: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\n{message}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:20]).decode().rstrip("=")

    # -- links to a video's bytes, for clients that cannot send a bearer key

    def sign_content(self, video_id: str, ttl_s: float) -> tuple[int, str]:
        """(expires, signature) for /file/{video_id}/content."""
        expires = int(time.time() + ttl_s)
        return expires, self._tag("content", f"{video_id}\n{expires}")

    def verify_content(self, video_id: str, expires: str, signature: str) -> None:
        """Raises BadSignature or Expired."""
        if not expires.isdigit() or not _same(self._tag("content", f"{video_id}\n{expires}"), signature):
            raise BadSignature
        if int(expires) < time.time():
            raise Expired

    # -- opaque page cursors

    def encode_cursor(self, state: dict[str, Any]) -> str:
        body = (
            base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")
        )
        return f"{body}.{self._tag('cursor', body)}"

    def decode_cursor(self, cursor: str) -> dict[str, Any]:
        """Raises BadSignature for anything this process did not hand out."""
        body, _, tag = cursor.partition(".")
        if not tag or not _same(self._tag("cursor", body), tag):
            raise BadSignature
        try:
            state = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            raise BadSignature from None
        if not isinstance(state, dict):
            raise BadSignature
        return state


def _same(expected: str, given: str) -> bool:
    """Constant-time, and for any text a client sends (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
