"""HMAC signatures for what the service hands out and later takes back: signed links and page cursors.

A signed value cannot be forged or altered by a client; an expired link or a
cursor signed by an earlier process (when no `url_signing_key` is set) is
refused like a forged one.

A link is signed for one *family* of one video (SPEC §12): the content in one
variant, the live stream, and later the playback package and the pictures. A
signature of one family opens nothing of another, and a link handed out
through a signed link never expires later than the link it came through.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
import time
from typing import Any


class BadSignature(Exception):
    """Forged, altered, signed with another key, or for another family or video."""


class Expired(Exception):
    """Genuine, but past its expiry."""


class LinkFamily(enum.StrEnum):
    CONTENT = "content"  #: /file/{id}/content, in one variant
    EVENTS = "events"  #: /file/{id}/events
    PLAYBACK = "playback"  #: /file/{id}/hls/s/{expires}.{signature}/..., the whole HLS package
    PICTURES = "pictures"  #: /file/{id}/poster.jpg, storyboard.vtt and .jpg, thumbnail.{jpg,webp}


#: Digits of an expiry (Unix seconds): ten until the year 2286.
EXPIRES_DIGITS = 12


class Signer:
    def __init__(self, key: str) -> None:
        # No key configured: one for this process only.
        self._key = key.encode() if key else secrets.token_bytes(32)

    def _tag(self, purpose: str, message: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\n{message}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:20]).decode().rstrip("=")

    # -- links, for clients that cannot send a bearer key (<video src>, EventSource)

    def sign(
        self, family: LinkFamily, video_id: str, ttl_s: float, variant: str = "", until: int | None = None
    ) -> tuple[int, str]:
        """(expires, signature) of a link of `family` to `video_id`, valid `ttl_s`, and never past `until`."""
        expires = int(time.time() + ttl_s)
        if until is not None:
            expires = min(expires, until)
        return expires, self._tag(family.value, f"{video_id}\n{variant}\n{expires}")

    def verify(
        self, family: LinkFamily, video_id: str, expires: str, signature: str, variant: str = ""
    ) -> int:
        """The link's expiry; raises BadSignature or Expired."""
        if not expires.isascii() or not expires.isdigit() or len(expires) > EXPIRES_DIGITS:
            raise BadSignature
        if not _same(self._tag(family.value, f"{video_id}\n{variant}\n{expires}"), signature):
            raise BadSignature
        if int(expires) < time.time():
            raise Expired
        return int(expires)

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


def key_name(key: str) -> str:
    """How an API key is known in logs, counts and ownership: a short fingerprint, never the key.

    (Not its place in the list: removing a key would hand the next one's uploads to another.)
    """
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _same(expected: str, given: str) -> bool:
    """Constant-time, and for any text a client sends (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
