"""worker.urlfetch against real HTTP(S) servers on 127.0.0.1 / ::1."""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import requests.adapters

import worker.logs
from worker.errors import ErrorCode, WorkerError
from worker.urlfetch import _PinnedAdapter, blocked_reason, fetch_url

IMAGE = os.urandom(150_000)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server: SiteServer = self.server.site  # type: ignore[attr-defined]
        server.seen.append((self.path, self.headers.get("Host", "")))
        parts = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        route = getattr(self, "route_" + parts.path.strip("/").replace("-", "_").replace(".", "_"), None)
        if route is None:
            self._send(404, b"not here")
        else:
            route(query)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_image_png(self, query: dict[str, str]) -> None:
        self._send(200, IMAGE, {"Content-Type": "image/png"})

    def route_gone(self, query: dict[str, str]) -> None:
        self._send(410, b"gone")

    def route_forbidden(self, query: dict[str, str]) -> None:
        self._send(403, b"no")

    def route_broken(self, query: dict[str, str]) -> None:
        self._send(503, b"busy")

    def route_busy(self, query: dict[str, str]) -> None:
        self._send(429, b"slow down")

    def route_redirect(self, query: dict[str, str]) -> None:
        self._send(int(query.get("status", "302")), b"", {"Location": query["to"]})

    def route_loop(self, query: dict[str, str]) -> None:
        self._send(302, b"", {"Location": "/loop"})

    def route_huge(self, query: dict[str, str]) -> None:
        """Declares 50 MB; sends only a little (the client must not wait for the rest)."""
        self.send_response(200)
        self.send_header("Content-Length", str(50_000_000))
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        self.close_connection = True

    def route_chunked(self, query: dict[str, str]) -> None:
        """Sends ``size`` bytes without a Content-Length (chunked encoding)."""
        remaining = int(query["size"])
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while remaining > 0:
                piece = min(remaining, 64 * 1024)
                self.wfile.write(f"{piece:x}\r\n".encode() + b"y" * piece + b"\r\n")
                remaining -= piece
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def route_cut(self, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"z" * 1000)
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def route_trickle(self, query: dict[str, str]) -> None:
        """One byte at a time, forever (until the client hangs up)."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"1\r\nt\r\n")
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:
            self.close_connection = True


class SiteServer:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        self.httpd = server_class((host, 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.site = self  # type: ignore[attr-defined]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.seen: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site() -> Iterator[SiteServer]:
    server = SiteServer()
    yield server
    server.close()


def fetch_error(url: str, dest: Path, **options: Any) -> WorkerError:
    options = {"max_bytes": 1_000_000, "allow_private": True, **options}
    with pytest.raises(WorkerError) as caught:
        fetch_url(url, dest, **options)
    assert not dest.exists()
    return caught.value


# -- the address check -------------------------------------------------------------------

ALWAYS_BLOCKED = [
    "0.0.0.0",
    "::",
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "fd00:ec2::254",
    "100.100.100.200",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "64:ff9b::a9fe:a9fe",
    "::127.0.0.1",
]
PRIVATE = [
    "127.0.0.1",
    "127.255.0.9",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "fc00::1",
    "fd12:3456::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "192.0.2.1",
    "198.18.0.1",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", ALWAYS_BLOCKED)
def test_never_allowed_addresses(address: str) -> None:
    assert blocked_reason(address, allow_private=False) is not None
    assert blocked_reason(address, allow_private=True) is not None


@pytest.mark.parametrize("address", PRIVATE)
def test_private_addresses_need_allow_private(address: str) -> None:
    assert blocked_reason(address, allow_private=False) is not None
    assert blocked_reason(address, allow_private=True) is None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(address, allow_private=False) is None
    assert blocked_reason(ipaddress.ip_address(address), allow_private=False) is None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "2130706433",
        "0x7f.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "LOCALHOST",
    ],
)
def test_hosts_resolving_to_loopback_are_refused_before_any_request(
    site: SiteServer, tmp_path: Path, host: str
) -> None:
    error = fetch_error(site.url("/image.png", host=host), tmp_path / "a.png", allow_private=False)
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    assert "loopback" in error.message and "only public internet addresses" in error.message
    assert site.seen == []


@pytest.mark.parametrize(
    "url",
    ["http://0.0.0.0:9/", "http://[::]:9/", "http://169.254.169.254/latest/meta-data/", "http://0/"],
)
def test_metadata_and_unspecified_addresses_are_refused_even_when_private_is_allowed(
    tmp_path: Path, url: str
) -> None:
    error = fetch_error(url, tmp_path / "a.png", allow_private=True)
    assert error.code is ErrorCode.URL_NOT_ALLOWED


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "//example.com/a.png",
        "http://user:secret@example.com/a.png",
        "https://token@example.com/a.png",
        "http:///a.png",
        "http://example.com:99999/a.png",
    ],
)
def test_schemes_credentials_and_malformed_urls_are_refused(tmp_path: Path, url: str) -> None:
    error = fetch_error(url, tmp_path / "a.png")
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    assert "secret" not in error.message


# -- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:{port}/image.png", "unspecified"),
        ("ftp://127.0.0.1/image.png", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://user:pw@127.0.0.1:{port}/image.png", "credentials"),
    ],
)
def test_every_redirect_hop_is_checked(site: SiteServer, tmp_path: Path, target: str, expected: str) -> None:
    url = site.url("/redirect") + "?to=" + requests.utils.quote(target.format(port=site.port), safe="")
    error = fetch_error(url, tmp_path / "a.png", allow_private=True)
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    assert expected in error.message
    assert [path for path, _ in site.seen] == [urlsplit(url).path + "?" + urlsplit(url).query]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_followed(site: SiteServer, tmp_path: Path, status: int) -> None:
    url = site.url(f"/redirect?status={status}&to=%2Fimage.png")
    assert fetch_url(url, tmp_path / "a.png", max_bytes=1_000_000, allow_private=True) == len(IMAGE)
    assert (tmp_path / "a.png").read_bytes() == IMAGE
    assert len(site.seen) == 2


def test_redirect_to_another_allowed_host_is_followed(site: SiteServer, tmp_path: Path) -> None:
    target = site.url("/image.png", host="localhost")
    url = site.url("/redirect") + "?to=" + requests.utils.quote(target, safe="")
    assert fetch_url(url, tmp_path / "a.png", max_bytes=1_000_000, allow_private=True) == len(IMAGE)
    assert site.seen[-1] == ("/image.png", f"localhost:{site.port}")


def test_redirect_loops_stop(site: SiteServer, tmp_path: Path) -> None:
    error = fetch_error(site.url("/loop"), tmp_path / "a.png", max_redirects=3)
    assert error.code is ErrorCode.INPUT_NOT_FOUND and not error.retryable
    assert "more than 3 times" in error.message
    assert len(site.seen) == 4


# -- status codes and failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "expected", "code"),
    [
        ("/missing.png", 404, "not found", ErrorCode.INPUT_NOT_FOUND),
        ("/gone", 410, "not found", ErrorCode.INPUT_NOT_FOUND),
        ("/forbidden", 403, "publicly readable", ErrorCode.INPUT_NOT_FOUND),
        ("/broken", 503, "later", ErrorCode.SOURCE_UNAVAILABLE),
        ("/busy", 429, "later", ErrorCode.SOURCE_UNAVAILABLE),
    ],
)
def test_http_errors_name_their_cause_with_the_status(
    site: SiteServer, tmp_path: Path, path: str, status: int, expected: str, code: ErrorCode
) -> None:
    error = fetch_error(site.url(path) + "?X-Amz-Signature=topsecret", tmp_path / "a.png")
    assert error.code is code
    # A missing or private image stays so; a busy server may answer next time.
    assert error.retryable is (code is ErrorCode.SOURCE_UNAVAILABLE)
    assert error.to_result()["details"]["retryable"] is error.retryable
    assert error.details["status"] == status
    assert expected in error.message
    assert "topsecret" not in error.message and "topsecret" not in json.dumps(error.details)


def test_unreachable_server_is_source_unavailable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fetch_error(f"http://127.0.0.1:{port}/a.png?sig=topsecret", tmp_path / "a.png")
    assert error.code is ErrorCode.SOURCE_UNAVAILABLE and error.retryable
    assert "cannot connect" in error.message
    assert "topsecret" not in error.message


def test_unresolvable_host_is_input_not_found(tmp_path: Path) -> None:
    error = fetch_error("http://no-such-host.invalid/a.png", tmp_path / "a.png")
    assert error.code is ErrorCode.INPUT_NOT_FOUND and not error.retryable
    assert "cannot be resolved" in error.message


def test_a_body_cut_short_leaves_no_file(site: SiteServer, tmp_path: Path) -> None:
    error = fetch_error(site.url("/cut"), tmp_path / "a.png")
    assert error.code is ErrorCode.SOURCE_UNAVAILABLE and error.retryable
    assert "connection broke" in error.message


def test_a_transfer_over_the_total_time_limit_stops(site: SiteServer, tmp_path: Path) -> None:
    error = fetch_error(site.url("/trickle"), tmp_path / "a.png", total_timeout_s=0.2)
    assert error.code is ErrorCode.SOURCE_UNAVAILABLE and error.retryable
    assert "too slowly" in error.message


# -- size caps --------------------------------------------------------------------------------


def test_declared_length_over_the_limit_is_refused_without_reading(site: SiteServer, tmp_path: Path) -> None:
    error = fetch_error(site.url("/huge"), tmp_path / "a.png", max_bytes=1_000_000)
    assert error.code is ErrorCode.INPUT_TOO_LARGE
    assert error.details["size"] == 50_000_000


def test_streamed_body_over_the_limit_is_cut(site: SiteServer, tmp_path: Path) -> None:
    error = fetch_error(site.url("/chunked?size=3000000"), tmp_path / "a.png", max_bytes=1_000_000)
    assert error.code is ErrorCode.INPUT_TOO_LARGE
    assert "more than 1000000 bytes" in error.message


def test_streamed_body_under_the_limit_is_kept(site: SiteServer, tmp_path: Path) -> None:
    size = fetch_url(
        site.url("/chunked?size=300000"), tmp_path / "a.png", max_bytes=1_000_000, allow_private=True
    )
    assert size == 300_000
    assert (tmp_path / "a.png").read_bytes() == b"y" * 300_000


def test_content_length_limit_applies_with_a_body_exactly_at_the_limit(
    site: SiteServer, tmp_path: Path
) -> None:
    size = fetch_url(site.url("/image.png"), tmp_path / "a.png", max_bytes=len(IMAGE), allow_private=True)
    assert size == len(IMAGE)
    error = fetch_error(site.url("/image.png"), tmp_path / "b.png", max_bytes=len(IMAGE) - 1)
    assert error.code is ErrorCode.INPUT_TOO_LARGE


# -- happy paths and the pinned connection ---------------------------------------------------


def test_happy_download_keeps_the_host_name(
    site: SiteServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = io.StringIO()
    monkeypatch.setattr(worker.logs, "_stream", logs)
    dest = tmp_path / "deep" / "avatar.src"
    url = site.url("/image.png?X-Amz-Signature=topsecret", host="localhost")
    assert fetch_url(url, dest, max_bytes=1_000_000, allow_private=True) == len(IMAGE)
    assert dest.read_bytes() == IMAGE
    assert site.seen == [("/image.png?X-Amz-Signature=topsecret", f"localhost:{site.port}")]
    assert "url_fetched" in logs.getvalue() and "topsecret" not in logs.getvalue()


def test_ipv6_literal(tmp_path: Path) -> None:
    try:
        server = SiteServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        url = server.url("/image.png", host="[::1]")
        assert fetch_url(url, tmp_path / "a.png", max_bytes=1_000_000, allow_private=True) == len(IMAGE)
        assert server.seen == [("/image.png", f"[::1]:{server.port}")]
    finally:
        server.close()


def test_pinned_adapter_connects_to_the_checked_address_without_a_second_lookup(site: SiteServer) -> None:
    # The name does not resolve at all: the request only succeeds if no lookup happens at connect.
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", _PinnedAdapter("127.0.0.1", "pinned.invalid"))
        response = session.get(
            f"http://pinned.invalid:{site.port}/image.png",
            headers={"Host": f"pinned.invalid:{site.port}"},
            timeout=5,
        )
    assert response.content == IMAGE
    assert site.seen == [("/image.png", f"pinned.invalid:{site.port}")]


@pytest.fixture
def tls_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteServer]:
    """An HTTPS server whose self-signed certificate names only ``localhost``, trusted by requests."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(cert_file))
    server = SiteServer(tls=context)
    yield server
    server.close()


def test_https_through_the_pinned_address_verifies_the_host_name(
    tls_site: SiteServer, tmp_path: Path
) -> None:
    url = tls_site.url("/image.png", host="localhost", scheme="https")
    assert fetch_url(url, tmp_path / "a.png", max_bytes=1_000_000, allow_private=True) == len(IMAGE)
    assert (tmp_path / "a.png").read_bytes() == IMAGE
    assert tls_site.seen == [("/image.png", f"localhost:{tls_site.port}")]


def test_https_certificate_for_another_name_is_refused(tls_site: SiteServer, tmp_path: Path) -> None:
    # Same server, same certificate, but asked for as 127.0.0.1: the name check must fail.
    error = fetch_error(tls_site.url("/image.png", scheme="https"), tmp_path / "a.png")
    assert error.code is ErrorCode.SOURCE_UNAVAILABLE and not error.retryable  # a certificate does not heal
    assert "TLS failed" in error.message
    assert tls_site.seen == []
