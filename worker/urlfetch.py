"""Download a user-given http(s) URL (the avatar image) without opening the worker's network.

Server-side request forgery defence, applied to the first URL and to every redirect hop
(redirects are followed here, one by one, never by requests):

- only ``http``/``https``, no credentials in the URL;
- the host is resolved once, and every address it resolves to must be public (see
  ``blocked_reason``); IPv4 embedded in IPv6 (mapped, NAT64, 6to4) is judged as IPv4;
- the connection then goes to one of those checked addresses: the adapter pins the
  connection pool to the IP while the ``Host`` header, TLS SNI and certificate check
  keep using the name. No second lookup happens between check and connect, so a DNS
  answer that changes in between (DNS rebinding) cannot redirect the connection;
- environment proxies and ``.netrc`` are ignored (``trust_env = False``): a proxy would
  make the address check meaningless.

``allow_private`` (``ALLOW_PRIVATE_URLS``) lifts the check for private, loopback, CGNAT
and unique-local addresses only; link-local addresses (cloud metadata at
169.254.169.254), multicast, unspecified and reserved addresses stay refused.

Time: ``total_timeout_s`` bounds the whole download, redirects included, and the job's deadline
bounds it too; both are enforced during every read (``worker.netdeadline`` cuts the connection),
so a server that trickles its headers or body ends the download on time.

Failures say what a client can do: ``INPUT_NOT_FOUND`` (404/410, 401/403, a host that does not
exist: fix the URL), ``SOURCE_UNAVAILABLE`` (5xx/429, refused or broken connections, timeouts,
too slow, TLS: ``details.retryable`` says whether sending the job again may help), ``TIMEOUT``
(the job's own deadline came first).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from worker.errors import ErrorCode, WorkerError, disk_full_error, is_disk_full
from worker.logs import log_event, redact_url
from worker.netdeadline import DeadlinePassed, cut_at, time_left, watch_pools

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CHUNK_BYTES = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "wan-animate-worker (+image fetch)"

_QUERY = re.compile(r"\?[^\s'\")]*")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# getaddrinfo's answers for a name that does not exist (others, such as EAI_AGAIN, may pass).
_NO_SUCH_HOST = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None)) if code
)
# Cloud metadata services outside the link-local ranges (AWS IPv6, Alibaba).
_METADATA = (ipaddress.ip_network("fd00:ec2::254/128"), ipaddress.ip_network("100.100.100.200/32"))


def blocked_reason(address: str | IPAddress, *, allow_private: bool) -> str | None:
    """Why a connection to ``address`` is refused, or ``None`` when it is allowed."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return blocked_reason(embedded, allow_private=allow_private)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local or any(ip in network for network in _METADATA):
        return "link-local or cloud metadata"
    if ip.is_loopback:
        return None if allow_private else "loopback"
    if ip.is_reserved:
        return "reserved"
    if ip in _CGNAT:
        return None if allow_private else "shared (CGNAT)"
    if ip.is_private or not ip.is_global:
        return None if allow_private else "private"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def fetch_url(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool,
    timeout_s: float = 30.0,
    max_redirects: int = 5,
    total_timeout_s: float = 300.0,
    field: str = "input_image_url",
    deadline: float | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Streams ``url`` to ``dest``; returns the number of bytes written.

    ``timeout_s`` bounds connecting and each read; ``total_timeout_s`` the whole transfer, redirects
    included (past it: ``SOURCE_UNAVAILABLE``); ``deadline`` (``time.monotonic()``) is the job's:
    reaching it first ends the download as ``TIMEOUT``; a set ``cancel`` ends it at once as
    ``CANCELLED``. ``dest`` is removed on any failure.
    """
    started = time.monotonic()
    job_first = deadline is not None and deadline < started + total_timeout_s
    limit = deadline if deadline is not None and job_first else started + total_timeout_s
    fetch = _Fetch(field, allow_private, timeout_s, limit)
    dest.parent.mkdir(parents=True, exist_ok=True)
    current = url
    try:
        with cut_at(limit, cancel) as watch, requests.Session() as session:
            session.trust_env = False
            try:
                for _hop in range(max_redirects + 1):
                    response = fetch.open(session, current)
                    with response:
                        if response.status_code in REDIRECT_STATUSES:
                            location = response.headers.get("Location")
                            if not location:
                                raise fetch.not_found(
                                    current, f"answered HTTP {response.status_code} without a Location"
                                )
                            following = urljoin(current, location)
                            log_event("url_redirect", url=_shown(current), location=_shown(following))
                            current = following
                            continue
                        fetch.check_status(current, response)
                        written = fetch.save(current, response, dest, max_bytes)
                        if watch.expired:  # a cut connection can look like a complete, empty answer
                            raise DeadlinePassed(current)
                        log_event("url_fetched", url=_shown(current), bytes=written)
                        return written
                raise fetch.not_found(url, f"redirected more than {max_redirects} times")
            except Exception as exc:
                if watch.cancelled:
                    raise WorkerError(ErrorCode.CANCELLED, "the job was cancelled") from exc
                if watch.expired or isinstance(exc, DeadlinePassed) or time.monotonic() >= limit:
                    raise fetch.too_slow(
                        current, dest, job_deadline=job_first, elapsed_s=time.monotonic() - started
                    ) from exc
                if is_disk_full(exc):
                    raise disk_full_error(f"saving {field}") from exc
                raise
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        fetch.close()


class _PinnedAdapter(HTTPAdapter):
    """Connects to one already-checked address; Host, SNI and the certificate use the name."""

    def __init__(self, address: str, hostname: str) -> None:
        super().__init__(max_retries=0)
        self.address = address
        self.hostname = hostname

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        watch_pools(self.poolmanager)  # the fetch's deadline can cut its connections

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.hostname
            pool_kwargs["assert_hostname"] = self.hostname
        return host_params, pool_kwargs


class _Fetch:
    def __init__(self, field: str, allow_private: bool, timeout_s: float, deadline: float) -> None:
        self.field = field
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.deadline = deadline
        self.adapters: list[_PinnedAdapter] = []

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()

    def open(self, session: requests.Session, url: str) -> requests.Response:
        """Checks ``url`` and its addresses, then sends the GET to a checked address."""
        request, hostname, port = self._prepare(url)
        addresses = self._resolve(url, hostname, port)
        for address in addresses:
            reason = blocked_reason(address, allow_private=self.allow_private)
            if reason is not None:
                raise self._not_allowed(
                    url,
                    f"its host {hostname!r} resolves to {address}, a {reason} address; "
                    "only public internet addresses are allowed",
                )
        last_error: Exception | None = None
        for address in addresses:
            adapter = _PinnedAdapter(address, hostname)
            self.adapters.append(adapter)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # A connect cannot be cut (worker.netdeadline): it gets no more than the time left.
            timeout = time_left(self.deadline, self.timeout_s)
            try:
                return session.send(request, stream=True, timeout=(timeout, timeout), allow_redirects=False)
            except requests.exceptions.SSLError as exc:
                raise self.unavailable(
                    url,
                    f"TLS failed ({_short(exc)}); the site needs a valid certificate",
                    retryable=False,
                ) from exc
            except requests.ConnectionError as exc:  # refused, unreachable, connect timeout: next address
                last_error = exc
            except requests.Timeout:
                raise self.unavailable(url, f"did not answer within {self.timeout_s:g} s") from None
            except requests.RequestException as exc:
                raise self.unavailable(url, f"request failed ({_short(exc)})") from exc
        raise self.unavailable(
            url, f"cannot connect to {hostname} ({_short(last_error)}); check that the URL is reachable"
        )

    def check_status(self, url: str, response: requests.Response) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 429 or status >= 500:
            raise self.unavailable(
                url,
                f"failed with HTTP {status}; the server may be busy, submit the job again later",
                status=status,
            )
        if status in (404, 410):
            problem = f"returned HTTP {status} (not found); check the URL"
        elif status in (401, 403):
            problem = (
                f"refused access (HTTP {status}); the URL must be publicly readable or carry a valid, "
                "unexpired signature"
            )
        else:
            problem = f"answered HTTP {status} instead of 200 with the image"
        raise self.not_found(url, problem, status=status)

    def save(self, url: str, response: requests.Response, dest: Path, max_bytes: int) -> int:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        declared = response.headers.get("Content-Length", "").strip()
        # With a Content-Encoding the header counts compressed bytes; the stream cap still applies.
        if encoding in ("", "identity") and declared.isdigit() and int(declared) > max_bytes:
            raise self._too_large(url, max_bytes, size=int(declared))
        written = 0
        try:
            with dest.open("wb") as out:
                for chunk in response.iter_content(CHUNK_BYTES):
                    written += len(chunk)
                    if written > max_bytes:
                        raise self._too_large(url, max_bytes)
                    out.write(chunk)
                    if time.monotonic() >= self.deadline:
                        raise DeadlinePassed(url)
        except requests.RequestException as exc:
            raise self.unavailable(url, f"the connection broke during the download ({_short(exc)})") from exc
        return written

    def not_found(self, url: str, problem: str, *, status: int | None = None) -> WorkerError:
        """INPUT_NOT_FOUND: the URL does not lead to the image; only another URL helps."""
        return WorkerError(
            ErrorCode.INPUT_NOT_FOUND,
            f"{self.field}: {_shown(url)} {problem}",
            details=self._details(url, status),
        )

    def unavailable(
        self, url: str, problem: str, *, status: int | None = None, retryable: bool = True
    ) -> WorkerError:
        """SOURCE_UNAVAILABLE: the server behind the URL is down, busy, slow or broken."""
        return WorkerError(
            ErrorCode.SOURCE_UNAVAILABLE,
            f"{self.field}: {_shown(url)} {problem}",
            details=self._details(url, status),
            retryable=retryable,
        )

    def too_slow(self, url: str, dest: Path, *, job_deadline: bool, elapsed_s: float) -> WorkerError:
        """The time ran out: the job's (TIMEOUT) or the fetch's own limit (SOURCE_UNAVAILABLE)."""
        received = dest.stat().st_size if dest.exists() else 0
        details = {**self._details(url, None), "bytes_received": received, "elapsed_s": round(elapsed_s, 1)}
        if job_deadline:
            return WorkerError(
                ErrorCode.TIMEOUT,
                f"{self.field}: the job's time (JOB_TIMEOUT_S) ran out while {_shown(url)} was still "
                f"sending the file ({received} bytes in {elapsed_s:.0f} s)",
                details=details,
                retryable=True,
            )
        return WorkerError(
            ErrorCode.SOURCE_UNAVAILABLE,
            f"{self.field}: {_shown(url)} sent the file too slowly: not complete after {elapsed_s:.0f} s "
            f"({received} bytes); use a faster host or put the image into MinIO",
            details=details,
        )

    def _details(self, url: str, status: int | None) -> dict[str, Any]:
        details: dict[str, Any] = {"field": self.field, "url": _shown(url)}
        if status is not None:
            details["status"] = status
        return details

    def _prepare(self, url: str) -> tuple[requests.PreparedRequest, str, int]:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise self._not_allowed(url, f"is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise self._not_allowed(url, f"must use http or https, not {scheme or 'no scheme'!r}")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise self._not_allowed(url, "must not contain credentials (user:password@)")
        if not parts.hostname:
            raise self._not_allowed(url, "has no host")
        try:
            request = requests.Request(
                "GET", url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            ).prepare()
        except (requests.RequestException, ValueError) as exc:
            raise self._not_allowed(url, f"is not a valid URL ({_short(exc)})") from None
        prepared = urlsplit(str(request.url))
        hostname = str(prepared.hostname)  # IDNA-encoded by requests
        # The connection goes to an IP, so the name travels in the Host header.
        request.headers["Host"] = prepared.netloc
        return request, hostname, port or (443 if scheme == "https" else 80)

    def _resolve(self, url: str, hostname: str, port: int) -> list[str]:
        try:
            infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_HOST:
                raise self.not_found(
                    url, f"has a host that cannot be resolved ({exc}); check the URL"
                ) from None
            raise self.unavailable(url, f"has a host that cannot be resolved now ({exc})") from None
        except (OSError, UnicodeError) as exc:
            raise self.not_found(url, f"has a host that cannot be resolved ({exc}); check the URL") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise self.not_found(url, "has a host without addresses")
        return addresses

    def _not_allowed(self, url: str, problem: str) -> WorkerError:
        return WorkerError(
            ErrorCode.URL_NOT_ALLOWED,
            f"{self.field} {_shown(url)} {problem}",
            details={"field": self.field, "url": _shown(url)},
        )

    def _too_large(self, url: str, max_bytes: int, *, size: int | None = None) -> WorkerError:
        size_text = f"is {size} bytes" if size is not None else f"is more than {max_bytes} bytes"
        details: dict[str, Any] = {"field": self.field, "url": _shown(url), "max_bytes": max_bytes}
        if size is not None:
            details["size"] = size
        return WorkerError(
            ErrorCode.INPUT_TOO_LARGE,
            f"{self.field}: {_shown(url)} {size_text}, over the limit of {max_bytes} bytes",
            details=details,
        )


def _shown(url: str) -> str:
    """``redact_url`` that never raises (it reads ``.port``, which raises on e.g. ':99999')."""
    try:
        return redact_url(url)
    except ValueError:
        return "<malformed url>"


def _short(exc: BaseException | None) -> str:
    """The error in a few words, without query strings (urllib3 puts the request path and
    query, where signatures live, into its messages)."""
    if exc is None:
        return "no address answered"
    text = _QUERY.sub("?<redacted>", str(exc))
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
