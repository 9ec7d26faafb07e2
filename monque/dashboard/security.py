"""Who may see the dashboard and which POSTs count: optional basic/bearer auth, CSRF tokens,
and response headers that keep the pages from running anything but the package's own script."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRF_COOKIE", "Auth", "Guard", "check_csrf", "csrf_token", "set_csrf_cookie"]

CSRF_COOKIE = "monque_csrf"
HEADERS = {
    # No inline script or style: whatever a job's data holds, the page runs only static/.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class Auth:
    """Credentials a standalone dashboard asks for: HTTP basic (``username``/``password``), a
    bearer ``token``, or both (either one is accepted)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both a username and a password")
        if self.password is not None and not self.password:
            raise ValueError("the basic-auth password must not be empty")
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the bearer token must be at least 16 characters")
        if self.username is None and self.token is None:
            raise ValueError("Auth needs a username and password, a token, or both")

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme.lower() == "basic" and self.username is not None:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Both compared, always: no early exit tells which one was wrong.
            ok_user = hmac.compare_digest(user.encode(), self.username.encode())
            ok_password = hmac.compare_digest(password.encode(), (self.password or "").encode())
            return ok_user and ok_password
        return False

    @property
    def challenge(self) -> str:
        return 'Basic realm="Monque", charset="UTF-8"' if self.username else 'Bearer realm="Monque"'


class Guard:
    """ASGI middleware: authentication (when configured) and the security headers."""

    def __init__(self, app: ASGIApp, auth: Auth | None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.auth is not None and not self.auth.allows(
            Headers(scope=scope).get("authorization")
        ):
            denied = PlainTextResponse(
                "authentication required", 401, {"www-authenticate": self.auth.challenge}
            )
            await _with_headers(denied)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {k.lower() for k, _ in raw}
                raw += [
                    (k.encode(), v.encode())
                    for k, v in HEADERS.items()
                    if k.encode() not in present
                ]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _with_headers(response: Response) -> Response:
    for key, value in HEADERS.items():
        response.headers[key] = value
    return response


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token and whether it is new (then the response sets the cookie)."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and 32 <= len(token) <= 128:
        return token, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    path = request.scope.get("root_path", "") or "/"
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, samesite="strict", path=path, secure=_is_https(request)
    )


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def check_csrf(request: Request, form: Mapping[str, str]) -> str | None:
    """Why this POST is refused, or None: the form's token must equal the cookie's (a page of
    another site can send the cookie but cannot read it), and a browser that says where the
    request comes from must say this origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request ({site})"
    origin = request.headers.get("origin")
    # The browser's own word (Sec-Fetch-Site) wins; else the Origin's host must be ours. The
    # scheme is not compared: behind a TLS-terminating proxy the app sees http.
    if site != "same-origin" and origin is not None:
        if origin == "null":
            return "request from an opaque origin"
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            return f"request from another origin ({origin})"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get("csrf", "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        return "missing or wrong CSRF token (reload the page and try again)"
    return None
