"""Who may read ``replaywatch serve``, and what every answer carries.

The pages show agents' outputs (diffs hold them), so the view is not open to whoever
reaches its port:

- ``REPLAYWATCH_SERVE_AUTH=none`` is allowed only when it is bound to loopback (the
  default, 127.0.0.1): anywhere else the command refuses to start;
- ``token``: every request carries ``Authorization: Bearer <token>``, or HTTP Basic
  with the token as its password (what a browser prompts for), checked in constant time;
- ``proxy``: an authenticating proxy in front (oauth2-proxy, an ingress with auth) sets
  ``REPLAYWATCH_SERVE_AUTH_HEADER`` (``X-Forwarded-User``) on every request it lets
  through; a request without it is refused. Only the proxy may reach the pod (the
  chart's NetworkPolicy).

Every answer also carries security headers (a strict Content-Security-Policy: the pages
use no script), and a request whose ``Host`` is not an allowed one is refused (DNS
rebinding against the loopback default). ``/healthz`` is always open, for probes.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

from replaywatch.exceptions import ConfigError

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
OPEN_PATHS = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    if host in ("localhost", "[::1]"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """How requests are let in: ``mode`` (none, token, proxy), the token or the proxy's
    header, and the Host headers answered."""

    mode: str
    token: str | None = None
    header: str = "X-Forwarded-User"
    hosts: tuple[str, ...] = ("*",)

    @classmethod
    def of(cls, *, bind: str, mode: str, token: str | None, header: str, hosts: tuple[str, ...]) -> Access:
        """The access of a view bound to ``bind``; ConfigError for a combination that
        would expose it (no authentication off loopback, a token mode without one)."""
        if mode == "none" and not is_loopback(bind):
            raise ConfigError(
                f"replaywatch serve would answer anyone who reaches {bind} without authentication, and its pages "
                "show agents' outputs: set REPLAYWATCH_SERVE_AUTH=token with REPLAYWATCH_SERVE_TOKEN, or =proxy "
                "behind an authenticating proxy, or bind it to 127.0.0.1"
            )
        if mode == "token" and (token is None or len(token) < 16):
            raise ConfigError("REPLAYWATCH_SERVE_AUTH=token needs REPLAYWATCH_SERVE_TOKEN of 16 characters or more")
        if mode == "proxy" and not header.strip():
            raise ConfigError("REPLAYWATCH_SERVE_AUTH=proxy needs REPLAYWATCH_SERVE_AUTH_HEADER")
        if not hosts:
            hosts = LOOPBACK_NAMES if is_loopback(bind) else ("*",)
        return cls(mode, token, header, tuple(h.strip("[]") if h != "*" else h for h in hosts))

    def allows(self, request: Request) -> bool:
        if self.mode == "none" or request.url.path in OPEN_PATHS:
            return True
        if self.mode == "proxy":
            return bool(request.headers.get(self.header, "").strip())
        assert self.token is not None
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if scheme.lower() == "basic":
            try:
                _, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return hmac.compare_digest(password.encode(), self.token.encode())
        return False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the Host check (the outermost layer)."""
        return TrustedHostMiddleware(app, allowed_hosts=list(self.hosts))


async def guard(access: Access, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Refuse what ``access`` does not let in; add the security headers to every answer."""
    if access.allows(request):
        response = await call_next(request)
    else:
        challenge = {"WWW-Authenticate": 'Basic realm="replaywatch"'} if access.mode == "token" else {}
        response = PlainTextResponse("authentication required\n", status_code=401, headers=challenge)
    response.headers.update(SECURITY_HEADERS)
    return response
