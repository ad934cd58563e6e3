"""The API's perimeter (README "Security model"): which Host a request may name, who counts as local, which paths
API input may point at, and a pure ASGI middleware that checks Host, Origin and the token and bounds the body
before any route reads it, and adds the security headers to every response."""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core.settings import Settings, get_settings

LOOPBACK_NAMES = ("localhost",)
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Proxies say who the real client is with these: a request carrying any of them is never treated as local.
FORWARDING = (
    b"forwarded",
    b"x-forwarded-for",
    b"x-real-ip",
    b"x-forwarded-host",
    b"x-client-ip",
    b"true-client-ip",
)
READ_POSTS = ("/api/runs/resolve",)  # POSTs that only read (the launch form's preview): open like reads
UPLOAD = re.compile(r"^/api/runs/\d+/artifacts/upload$")
INGEST = re.compile(r"^/api/runs/\d+/(metrics|events)$")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


# ---------------------------------------------------------------------------------------------------------------
# Hosts and clients


def host_name(value: str) -> str:
    """The host part of a Host header or URL authority, lower case, without port, brackets or trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_loopback(host: str) -> bool:
    """A loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    # Every request asks about its Host header: parsing an address each time cost ~20 us of a ~0.7 ms ingest call.
    # Longer than 255 characters is no address (and stays out of the cache).
    return len(host) <= 255 and _is_loopback_address(host)


@functools.lru_cache(maxsize=256)
def _is_loopback_address(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> list[str]:
    return [*DEFAULT_HOSTS, *settings.extra_hosts]


def host_allowed(host: str, settings: Settings, server_ip: str | None = None) -> bool:
    """Loopback, the address this connection arrived on (an IP literal cannot be rebound), or AIME_ALLOWED_HOSTS
    (`*.example.org` for subdomains, `*` for any: only behind a proxy that checks Host itself)."""
    if not host:
        return False
    if is_loopback(host) or (server_ip is not None and host == server_ip.lower() and _is_ip(host)):
        return True
    for name in settings.extra_hosts:
        if name == "*" or host == name or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _headers(scope: Scope) -> dict[bytes, str]:
    return {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def is_local(scope: Scope) -> bool:
    """The client is this machine: a loopback peer address and no forwarding headers (a proxy on this machine
    relays remote clients; X-Real-IP / Forwarded / X-Forwarded-For can only make a request less local)."""
    client = scope.get("client")
    if not client or not is_loopback(str(client[0]).lower()):
        return False
    return not any(k in FORWARDING for k, _ in scope.get("headers", []))


def same_origin(origin: str, host_header: str) -> bool:
    """Origin (scheme://host[:port]) names the same host and port as the Host header."""
    try:
        o, h = urlsplit(origin.strip().lower()), urlsplit("//" + host_header.strip().lower())
        default = {"http": 80, "https": 443}.get(o.scheme)
        return bool(o.scheme and o.hostname) and (o.hostname, o.port or default) == (
            h.hostname,
            h.port or default,
        )
    except ValueError:  # a port that is not a number
        return False


def session_refusal(scope: Scope) -> str | None:
    """Why GET /api/session must not hand this request the token (None: it may)."""
    headers = _headers(scope)
    host = headers.get(b"host", "")
    if not is_local(scope):
        return "the token is only handed to a browser on this machine (loopback client, no proxy headers)"
    if not is_loopback(host_name(host)):
        return f"the token is only handed to pages opened as localhost or 127.0.0.1, not {host_name(host)!r}"
    origin = headers.get(b"origin")
    if origin is not None and not same_origin(origin, host):
        return f"the token is not handed to another origin ({origin})"
    if headers.get(b"sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "the token is not handed to cross-site requests"
    return None


def token_ok(scope: Scope, settings: Settings, allow_query: bool = False) -> bool:
    """The request carries the API token (Authorization: Bearer, or ?token= where `allow_query`)."""
    if not settings.api_token:
        return False
    headers = _headers(scope)
    scheme, _, token = headers.get(b"authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secrets.compare_digest(
        token.strip().encode(), settings.api_token.encode()
    ):
        return True
    if allow_query:  # EventSource cannot send headers: reads may carry ?token=
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        return bool(query) and secrets.compare_digest(query.encode(), settings.api_token.encode())
    return False


def reads_open(scope: Scope, settings: Settings) -> bool:
    """Reads need no token when AIME_OPEN_READS=all, or =localhost (default) for a local client."""
    return settings.open_reads == "all" or (settings.open_reads == "localhost" and is_local(scope))


# ---------------------------------------------------------------------------------------------------------------
# Paths from API input


def run_areas(settings: Settings) -> list[Path]:
    """Inside the data directory, only these hold run files (the database, token, broker, logs and spool do not)."""
    root = settings.artifact_root
    return [settings.datasets_dir, settings.runs_dir, root / "uploads"]


def allowed_roots(settings: Settings) -> list[Path]:
    return [*run_areas(settings), *settings.extra_roots]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(settings: Settings, field: str, value: str) -> str:
    """The absolute, symlink-resolved path of `value` (relative paths are taken inside the data directory), or
    ValueError naming the field and the allowed roots. Paths inside the data directory must lie in its run areas
    (datasets/, runs/, uploads/) even when an operator root contains the data directory."""
    try:
        raw = Path(str(value)).expanduser()
        path = (raw if raw.is_absolute() else settings.artifact_root / raw).resolve()
    except RuntimeError as exc:  # "~someone" with no such user, or a symlink loop: a bad path, not a crash
        raise ValueError(
            f"{value} is not a usable path ({exc}); give a path inside the allowed directories"
        ) from exc
    data = settings.artifact_root
    areas = run_areas(settings)
    ok = (
        any(_inside(path, a.resolve()) for a in areas)
        if _inside(path, data)
        else any(_inside(path, r) for r in settings.extra_roots)
    )
    if not ok:
        roots = ", ".join(str(r) for r in allowed_roots(settings))
        extra = "" if settings.extra_roots else " (AIME_ALLOWED_ROOTS adds more: comma-separated directories)"
        raise ValueError(f"{value} resolves to {path}, outside the allowed directories: {roots}{extra}")
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# The middleware


def too_large(limit: int, what: str) -> str:
    return f"request body too large: {what} are limited to {limit} bytes ({_size(limit)})"


class BodyTooLarge(HTTPException):
    """A streamed body passed its limit while a route was reading it (413; the route sees an HTTP error)."""

    def __init__(self, limit: int, what: str):
        super().__init__(413, too_large(limit, what))


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.4g} {unit}"
        n /= 1024
    return str(n)


def body_limit(method: str, path: str, settings: Settings) -> tuple[int, str]:
    if UPLOAD.match(path):
        return settings.max_upload_bytes, "artifact uploads (AIME_MAX_UPLOAD_BYTES)"
    if method == "POST" and INGEST.match(path):
        return settings.max_ingest_bytes, "metric and event batches (AIME_MAX_INGEST_BYTES)"
    return settings.max_body_bytes, "request bodies (AIME_MAX_BODY_BYTES)"


async def _reply(send: Send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *HEADERS,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityMiddleware:
    """Host allow-list (DNS rebinding), same-origin for mutating calls, the token before the body, body limits,
    and security headers on every response. Pure ASGI: nothing here reads a body the route will not read."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        headers = _headers(scope)
        method, path = scope["method"].upper(), scope.get("path", "")
        host_header = headers.get(b"host", "")
        server = scope.get("server")
        server_ip = str(server[0]) if server else None
        if not host_allowed(host_name(host_header), settings, server_ip):
            allowed = ", ".join(allowed_hosts(settings))
            return await _reply(
                send,
                400,
                f"Host {host_header!r} is not an allowed host of this server; allowed: {allowed} and the address "
                "it listens on (add the server's names to AIME_ALLOWED_HOSTS, comma-separated)",
            )
        origin = headers.get(b"origin")
        if method in MUTATING and origin is not None and not same_origin(origin, host_header):
            return await _reply(
                send, 403, f"cross-origin request refused: Origin {origin} is not this server"
            )
        if method in MUTATING and not token_ok(scope, settings):
            read_post = path in READ_POSTS and (
                reads_open(scope, settings) or token_ok(scope, settings, True)
            )
            if not read_post:
                detail = (
                    "missing or wrong bearer token (Authorization: Bearer <AIME_API_TOKEN>)"
                    if settings.api_token
                    else "the server has no AIME_API_TOKEN configured; mutating calls are refused"
                )
                return await _reply(send, 401, detail, [(b"www-authenticate", b"Bearer")])
        limit, what = body_limit(method, path, settings)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _reply(send, 400, f"Content-Length {length!r} is not a number")
            if declared > limit:
                return await _reply(send, 413, too_large(limit, what))
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, what)
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *(h for h in HEADERS if h[0] not in names)],
                }
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except BodyTooLarge as exc:
            if started:
                raise
            await _reply(send, 413, str(exc.detail))
