"""URL fetching against a real HTTP server on 127.0.0.1: caps, timeouts, redirects, host allow-lists
and the private-address block. Only loopback traffic: any other connect or a DNS lookup fails the test."""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from mmagent.config import load_settings
from mmagent.content import ImagePart, MediaStore, load_media
from mmagent.content.fetch import check_url, is_public_address
from mmagent.errors import FetchError, ForbiddenSourceError, MediaTooLargeError, UnsupportedMediaError


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (0, 120, 255)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
CAP = 1000  # limits.max_bytes in the size tests; the PNG above is smaller


# -- the server ------------------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, str | None]] = []  # (path, Host header)
        self.stop = threading.Event()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Host")))
        try:
            self.route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on purpose (cap reached, timeout)

    def body(self, data: bytes, ctype: str = "image/png", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route(self) -> None:
        path, port = self.path, self.server.port
        if path == "/img.png":
            self.body(PNG)
        elif path == "/mislabeled":
            self.body(PNG, "text/html; charset=utf-8")
        elif path == "/page.html":
            self.body(b"<html><body>not media</body></html>", "text/html")
        elif path == "/missing.png":
            self.body(b"not found", "text/plain", status=404)
        elif path == "/big-declared":
            self.close_connection = True
            self.body(b"\x89PNG\r\n\x1a\n" + b"\x00" * (CAP * 5))
        elif path == "/big-chunked":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(20):
                chunk = b"\x00" * 256
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            self.close_connection = True
            self.server.stop.wait(5)  # longer than read_timeout; bounded, and cut short at teardown
            self.body(PNG)
        elif path == "/drip":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            for i in range(0, len(PNG), 8):  # every chunk within read_timeout, the whole far over total
                if self.server.stop.wait(0.2):
                    return
                self.wfile.write(PNG[i : i + 8])
                self.wfile.flush()
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])  # /redirect/<n> is n redirects away from the image
            self.redirect(f"/redirect/{n - 1}" if n > 1 else "/img.png")
        elif path == "/to-localhost":
            self.redirect(f"http://localhost:{port}/img.png")
        elif path == "/to-metadata":
            self.redirect("http://169.254.169.254/latest/meta-data/")
        elif path == "/to-ftp":
            self.redirect(f"ftp://127.0.0.1:{port}/img.png")
        else:
            self.body(b"?", "text/plain", status=404)


@pytest.fixture(scope="module")
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


# -- isolation: loopback only ------------------------------------------------------------------------------


def _loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    refused: list = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address, *args):
        if not _loopback(address):
            refused.append(address)
            raise AssertionError(f"test tried to connect to non-loopback {address!r}")
        return real_connect(self, address, *args)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name != "localhost":
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                refused.append(name)
                raise AssertionError(f"test tried to resolve {name!r}") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not refused, refused


# -- helpers ---------------------------------------------------------------------------------------------


def fetch_settings(tmp_path: Path, **fetch):
    overrides = {"fetch.enabled": True, "fetch.allow_private": True, "fetch.connect_timeout": 2.0,
                 "fetch.read_timeout": 2.0, "fetch.total_timeout": 10.0}
    overrides.update({(k if "." in k else f"fetch.{k}"): v for k, v in fetch.items()})
    return load_settings(cwd=tmp_path, overrides=overrides)


def files_under(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.is_file())


def rejected(exc_type, url, settings, home):
    before = files_under(home)
    with pytest.raises(exc_type) as info:
        load_media(url, settings=settings)
    assert type(info.value) is exc_type
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 300
    assert files_under(home) == before, "a rejected input wrote to the media store"
    return info.value


# -- tests -------------------------------------------------------------------------------------------------


def test_png_url_loads_and_host_header_is_kept(server, tmp_path, home):
    part = load_media(server.url("/img.png"), expect="image", settings=fetch_settings(tmp_path))
    assert isinstance(part, ImagePart) and (part.width, part.height) == (20, 10)
    assert part.read_bytes(MediaStore(home / "media")) == PNG
    assert server.requests[-1] == ("/img.png", f"127.0.0.1:{server.port}")


def test_bytes_decide_over_content_type(server, tmp_path, home):
    part = load_media(server.url("/mislabeled"), settings=fetch_settings(tmp_path))
    assert part.mime_type == "image/png"
    rejected(UnsupportedMediaError, server.url("/page.html"), fetch_settings(tmp_path), home)


def test_http_error_status_is_a_fetch_error(server, tmp_path, home):
    err = rejected(FetchError, server.url("/missing.png"), fetch_settings(tmp_path), home)
    assert "404" in str(err)


def test_declared_content_length_over_the_cap(server, tmp_path, home):
    settings = fetch_settings(tmp_path, **{"limits.max_bytes": CAP})
    err = rejected(MediaTooLargeError, server.url("/big-declared"), settings, home)
    assert f"{CAP:,} byte limit" in str(err)


def test_chunked_body_over_the_cap(server, tmp_path, home):
    settings = fetch_settings(tmp_path, **{"limits.max_bytes": CAP})
    rejected(MediaTooLargeError, server.url("/big-chunked"), settings, home)
    assert load_media(server.url("/img.png"), settings=settings).ref.size == len(PNG)  # under the cap: fine


def test_read_timeout(server, tmp_path, home):
    settings = fetch_settings(tmp_path, read_timeout=0.5)
    start = time.monotonic()
    err = rejected(FetchError, server.url("/slow"), settings, home)
    assert time.monotonic() - start < 3
    assert "timed out" in str(err)


def test_total_timeout_stops_a_drip_feed(server, tmp_path, home):
    settings = fetch_settings(tmp_path, read_timeout=1.0, total_timeout=0.6)
    start = time.monotonic()
    rejected(FetchError, server.url("/drip"), settings, home)
    assert time.monotonic() - start < 3


def test_redirects_are_followed_up_to_the_limit(server, tmp_path, home):
    settings = fetch_settings(tmp_path, max_redirects=3)
    assert load_media(server.url("/redirect/3"), settings=settings).mime_type == "image/png"
    before = len(server.requests)
    err = rejected(FetchError, server.url("/redirect/5"), fetch_settings(tmp_path, max_redirects=3), home)
    assert "redirects" in str(err)
    assert len(server.requests) - before == 4  # the first request and 3 redirects, no more


def test_redirect_to_a_host_not_allowed(server, tmp_path, home):
    settings = fetch_settings(tmp_path, allowed_hosts=["127.0.0.1"])
    assert load_media(server.url("/img.png"), settings=settings).ref.size == len(PNG)
    before = len(server.requests)
    err = rejected(ForbiddenSourceError, server.url("/to-localhost"), settings, home)
    assert "localhost" in str(err) and "allowed_hosts" in str(err)
    rejected(ForbiddenSourceError, server.url("/to-metadata"), settings, home)
    assert [p for p, _ in server.requests[before:]] == ["/to-localhost", "/to-metadata"]


def test_redirect_to_another_scheme(server, tmp_path, home):
    rejected(ForbiddenSourceError, server.url("/to-ftp"), fetch_settings(tmp_path), home)


def test_private_address_refused_before_connecting(server, tmp_path, home):
    before = len(server.requests)
    settings = fetch_settings(tmp_path, allow_private=False)
    for url in (server.url("/img.png"), f"http://localhost:{server.port}/img.png",
                f"http://[::ffff:127.0.0.1]:{server.port}/img.png"):
        err = rejected(ForbiddenSourceError, url, settings, home)
        assert "non-public" in str(err)
    assert len(server.requests) == before  # the server never saw them


def test_fetching_disabled_by_default(server, tmp_path, home):
    before = len(server.requests)
    rejected(ForbiddenSourceError, server.url("/img.png"), load_settings(cwd=tmp_path), home)
    assert len(server.requests) == before


def test_check_url_pins_the_checked_address(tmp_path):
    settings = fetch_settings(tmp_path)
    assert check_url("http://127.0.0.1:8080/x.png", settings.fetch) == ("127.0.0.1", "127.0.0.1", 8080)
    assert check_url("https://[::1]/x", settings.fetch) == ("::1", "::1", 443)
    with pytest.raises(ForbiddenSourceError):
        check_url("http://127.0.0.1/", fetch_settings(tmp_path, allow_private=False).fetch)


@pytest.mark.parametrize(
    "address, public",
    [("8.8.8.8", True), ("1.1.1.1", True), ("2001:4860:4860::8888", True), ("64:ff9b::808:808", True),
     ("127.0.0.1", False), ("127.255.255.254", False), ("10.1.2.3", False), ("172.16.0.1", False),
     ("172.31.255.255", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
     ("0.0.0.0", False), ("255.255.255.255", False), ("224.0.0.1", False), ("239.255.255.250", False),
     ("198.18.0.1", False), ("192.0.2.1", False), ("240.0.0.1", False),
     ("::1", False), ("::", False), ("fe80::1", False), ("fe80::1%eth0", False), ("fc00::1", False),
     ("fd00:ec2::254", False), ("ff02::1", False), ("::ffff:10.0.0.1", False), ("::ffff:127.0.0.1", False),
     ("::ffff:8.8.8.8", True), ("2002:7f00:1::", False), ("2002:a00:1::", False), ("::7f00:1", False),
     ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b:1::a00:1", False),
     ("2001:db8::1", False)],
)
def test_is_public_address(address, public):
    assert is_public_address(address) is public
