"""Outbound HTTP calls (tenants' CRM webhooks, the AI provider): the SSRF guard, a total deadline
and a reply cap.

httpx's timeouts apply to each phase and to each socket read, so a server that drips a byte a
second never trips them. Here every socket operation (connect, TLS handshake, each send, each
read) waits at most the time left until the call's deadline, through a network backend of
httpcore's (its extension point; httpx has no option for it): a call ends by its deadline
whatever the server does, name resolution excepted. The reply is streamed and at most
`max_bytes` of it are read; the connection is then dropped, the rest never read.

The same network backend applies the SSRF guard (leadflow/outbound_guard.py): it resolves the
host once, refuses if any address is internal, connects to an address it checked (TLS still
verifies the host name, and Host is the URL's), and checks the peer it is connected to. A
redirect is never followed; proxies and .netrc from the environment are not used (a proxy
would resolve and connect where the guard cannot look).

Also here: the errors that say a dependency is down rather than that a lead is bad (pools B
and C retry those, never quarantine or dead-letter for them), and `Deadline`, the time a task
has left, which bounds its outbound calls and waits.
"""

import contextvars
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import django.db
import httpcore
import httpx
import kombu.exceptions
import redis
from prometheus_client import Counter

from leadflow.outbound_guard import (
    OutboundPolicy,
    OutboundRefused,
    address_check,
    host_addresses_checked,
    url_check,
)

log = logging.getLogger(__name__)

DEPENDENCIES = ("ai", "crm")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

DEADLINE_HITS = Counter(
    "leadflow_outbound_deadline_hits",
    "Outbound calls cut by their total deadline (connect + send + receive), by dependency.",
    ["dependency"],
)
RESPONSE_TRUNCATED = Counter(
    "leadflow_outbound_response_truncated",
    "Outbound replies longer than the size cap: the rest was not read, by dependency.",
    ["dependency"],
)

# Not the lead's fault: PostgreSQL or Redis (breakers, leases, the broker) is down or blinked.
# A deadlock or a cancelled statement is an OperationalError too: retrying is right for them.
DEPENDENCY_DOWN_ERRORS = (
    django.db.OperationalError,
    django.db.InterfaceError,
    redis.RedisError,
    kombu.exceptions.OperationalError,
)


class Deadline:
    """A point in time (monotonic clock) by which some work must be done."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return max(self.at - time.monotonic(), 0.0)

    def allows(self, seconds: float) -> bool:
        """Whether `seconds` of work still fit before the deadline."""
        return self.left() >= seconds


class OutboundError(Exception):
    """No usable reply: unreachable, out of time, or (permanent) a URL that cannot be called;
    `rule` names the SSRF guard's rule when the guard refused it."""

    def __init__(
        self,
        message: str,
        *,
        timed_out: bool = False,
        permanent: bool = False,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.permanent = permanent
        self.rule = rule


@dataclass(frozen=True)
class OutboundReply:
    status: int
    body: bytes  # at most the cap
    truncated: bool  # the reply was longer than the cap; the rest was not read

    def json(self):
        """The body as JSON (ValueError if it is not, or was cut; RecursionError if nested past
        the parser's depth)."""
        return json.loads(self.body)

    def excerpt(self, max_chars: int) -> str:
        """The body as text PostgreSQL can store (no NUL, no lone surrogate), cut to max_chars."""
        return text_storable(self.body.decode("utf-8", errors="replace"), max_chars)


def text_storable(text: str, max_chars: int) -> str:
    """text without what a PostgreSQL text or jsonb value refuses, ending in "…" if cut."""
    text = text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def json_storable(value) -> bool:
    """Whether PostgreSQL's jsonb takes the value: it refuses \\u0000 and lone surrogates."""
    try:
        dumped = json.dumps(value, ensure_ascii=False)
        dumped.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return False
    return "\\u0000" not in dumped


def outbound_post(
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    deadline_seconds: float,
    max_bytes: int,
    dependency: str,
) -> OutboundReply:
    """POST and read at most max_bytes of the reply, all within deadline_seconds.

    Raises OutboundError: timed_out when the deadline passed (counted in
    leadflow_outbound_deadline_hits_total), permanent when the URL cannot be called at all
    (with `rule` set when the SSRF guard refused the URL, an address, or a redirect).
    """
    # Long on purpose: every socket step of one call under the same deadline, together, so
    # no step escapes it.
    policy = OutboundPolicy.current()
    deadline_token = _deadline_at.set(time.monotonic() + deadline_seconds)
    policy_token = _policy.set(policy)
    try:
        url_check(url, policy, resolve="none")  # the address is checked where it is connected
        client = _client()
        request = client.build_request(
            "POST",
            url,
            content=content,
            # Compressed replies are not decoded (a small body can inflate without bound).
            headers={"Accept-Encoding": "identity", **headers},
            timeout=httpx.Timeout(deadline_seconds),
        )
        if request.url.userinfo:  # as httpx reads the URL, whatever urllib made of it
            raise OutboundRefused("credentials", "user:password@ in the URL is not allowed")
        response = client.send(request, stream=True)
        try:
            if response.status_code in REDIRECT_STATUSES:
                location = response.headers.get("location", "")[:200]
                raise OutboundRefused(
                    "redirect",
                    f"answered {response.status_code} to {location!r}: redirects are not followed",
                )
            body, truncated = _body_read(response, max_bytes)
        finally:
            response.close()  # a body not read to its end closes the connection
    except OutboundRefused as exc:
        log.warning("outbound %s call refused: %s", dependency, exc)
        raise OutboundError(str(exc), permanent=True, rule=exc.rule) from exc
    except httpx.TimeoutException as exc:
        DEADLINE_HITS.labels(dependency).inc()
        raise OutboundError(
            f"no complete reply within {deadline_seconds:g}s ({type(exc).__name__})",
            timed_out=True,
        ) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise OutboundError(f"cannot call {url!r}: {exc}", permanent=True) from exc
    except httpx.HTTPError as exc:
        raise OutboundError(f"unreachable: {type(exc).__name__}: {exc}") from exc
    finally:
        _policy.reset(policy_token)
        _deadline_at.reset(deadline_token)
    if truncated:
        RESPONSE_TRUNCATED.labels(dependency).inc()
    return OutboundReply(status=response.status_code, body=body, truncated=truncated)


def _body_read(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():
        parts.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            return b"".join(parts)[:max_bytes], True
    return b"".join(parts), False


# --- the deadline, applied to every socket operation of the call ---

_deadline_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "outbound_deadline_at", default=None
)
_policy: contextvars.ContextVar[OutboundPolicy | None] = contextvars.ContextVar(
    "outbound_policy", default=None
)
# A send waits at most the time left, but a send of a large buffer may take several waits:
# bodies go out in slices, each bounded by what is left when it starts.
_WRITE_SLICE = 16 * 1024


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    at = _deadline_at.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_SLICE):
            self._inner.write(
                buffer[start : start + _WRITE_SLICE], _bounded(timeout, httpcore.WriteTimeout)
            )

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> "_DeadlineStream":
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects only to addresses the SSRF guard allows, within the call's deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        policy = _policy.get() or OutboundPolicy.current()
        if policy.host_allowed(host):  # the operator's: connected by name, as usual
            bounded = _bounded(timeout, httpcore.ConnectTimeout)
            return _DeadlineStream(
                self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
            )
        try:
            # Resolved once, here: the connection goes to one of these checked addresses, never
            # to what a second resolution (a rebinding DNS answer) would say.
            addresses = host_addresses_checked(host, port)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"{host!r} does not resolve: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:  # in the resolver's order, as socket.create_connection does
            bounded = _bounded(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(
                    address, port, bounded, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            try:
                # The peer actually connected to: the address checked, unless something on the
                # way chose another (checked all the same).
                address_check(stream.get_extra_info("server_addr")[0], host)
            except OutboundRefused:
                stream.close()
                raise
            return _DeadlineStream(stream)
        raise failure or httpcore.ConnectError(f"{host!r} has no address")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose sockets obey the call's deadline."""

    def __init__(self) -> None:  # HTTPTransport's only state is its pool, built here instead
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(),
        )


_http: httpx.Client | None = None
_http_pid: int | None = None
_http_lock = threading.Lock()


def _client() -> httpx.Client:
    # One pooled client per process (httpx.Client is thread-safe); never shared across fork.
    global _http, _http_pid
    with _http_lock:
        if _http is None or _http_pid != os.getpid():
            _http = httpx.Client(
                transport=_DeadlineTransport(),
                follow_redirects=False,  # a redirect is refused (the SSRF guard's "redirect")
                trust_env=False,  # no proxy or .netrc from the environment
                headers={"User-Agent": "LeadFlow/1"},
            )
            _http_pid = os.getpid()
            # Series at 0 from the first call on, so rate() and alerts see them. Not at import:
            # in a prefork worker's parent the metrics' directory may not exist yet.
            for dependency in DEPENDENCIES:
                DEADLINE_HITS.labels(dependency)
                RESPONSE_TRUNCATED.labels(dependency)
        return _http
