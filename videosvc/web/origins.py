"""Who may reach the service through a browser (SPEC §12): the Host it answers to, and cross-site writes.

A web page elsewhere can reach a service on loopback two ways. By DNS
rebinding: its own name, made to resolve to 127.0.0.1, so the browser treats
the service as the page's own origin; the Host header still carries that
name, so only the names the service is known by are answered. And by a plain
cross-site request (a form POST needs no CORS preflight): without API keys,
only the browser's `Origin` and `Sec-Fetch-Site` headers tell it from the
page at `/` or a command-line client, which send neither or their own origin.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from ..config import HttpSettings

log = logging.getLogger(__name__)

#: Names a page on another site can never make a browser send as Host: always answered.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class HostPolicy:
    #: The host names answered (lowercase, no port); None: any.
    names: frozenset[str] | None

    @classmethod
    def of(cls, settings: HttpSettings) -> HostPolicy:
        if "*" in settings.allowed_hosts:
            return cls(None)
        named = {name.strip().lower().strip("[]") for name in settings.allowed_hosts if name.strip()}
        if settings.public_url:
            named.add((urlsplit(settings.public_url).hostname or "").lower())
        if named:
            return cls(frozenset(named | LOOPBACK_NAMES))
        if _is_loopback(settings.host):
            return cls(LOOPBACK_NAMES)
        log.warning(
            "listening on %s with allowed_hosts empty: requests naming any Host are answered; set"
            " allowed_hosts to the names clients use (a web page could otherwise reach this service"
            " by DNS rebinding)",
            settings.host,
        )
        return cls(None)

    def allows(self, host: str | None) -> bool:
        if self.names is None:
            return True
        return host_name(host or "") in self.names


def host_name(host: str) -> str:
    """`Host` without its port, lowercase: "[::1]:8080" -> "::1", "Example.com:80" -> "example.com"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(address: str) -> bool:
    if address in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def cross_site_refusal(request: web.Request, settings: HttpSettings) -> str | None:
    """Why an unsafe request from a page on another site is refused, or None.

    Only without API keys: with keys, a page must hold one to write, and CORS keeps
    other sites' pages from sending the Authorization header.
    """
    if settings.api_keys or request.method in SAFE_METHODS:
        return None
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and ("*" in settings.cors_origins or origin in settings.cors_origins):
        return None
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    own = {f"{request.scheme}://{request.host}".lower()}
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        own.add(f"{parts.scheme}://{parts.netloc}".lower())
    if site in ("cross-site", "same-site") or (origin is not None and origin.lower() not in own):
        return (
            "a page on another site may not change anything here: add its origin to cors_origins,"
            " or set api_keys"
        )
    return None
