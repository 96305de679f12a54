"""Hostile servers and data URLs: one deadline for the whole fetch (name lookup, connect, headers
dribbled byte by byte, body, every redirect hop), compression bombs held to the byte cap on the
DECOMPRESSED bytes (peak memory measured), and oversized data URLs refused before decoding.

Only loopback traffic: a raw-socket server on 127.0.0.1 in a thread; any other connect or a DNS
lookup fails the test (the slow name lookup is a stand-in patched into socket.getaddrinfo)."""

from __future__ import annotations

import gzip
import io
import ipaddress
import socket
import threading
import time
import tracemalloc
import zlib
from urllib.parse import quote_from_bytes

import pytest
from PIL import Image

from mmagent.config import load_settings
from mmagent.content import load_media
from mmagent.content.sources import parse_data_url
from mmagent.errors import FetchError, InvalidDataURLError, MediaTooLargeError, UnsupportedMediaError
from tests.test_fetch import fetch_settings, rejected  # the round-one fetch tests' helpers


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (0, 120, 255)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
BOMB_CAP = 4 * 1024 * 1024  # limits.max_bytes in the bomb test
BOMB_SIZE = 256 * 1024 * 1024  # what the bomb inflates to (64x the cap)
SLACK = 0.6  # seconds allowed past a deadline (two busy CPUs shared by several test runs)


def _gzip_stream(chunks, level: int = 9) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container
    out = [comp.compress(c) for c in chunks]
    out.append(comp.flush())
    return b"".join(out)


def _bomb() -> bytes:
    """gzip(gzip(BOMB_SIZE zero bytes)): a few KB on the wire, sent as `Content-Encoding: gzip, gzip`."""
    zeros = bytes(1024 * 1024)
    inner = _gzip_stream(zeros for _ in range(BOMB_SIZE // len(zeros)))
    return _gzip_stream([inner])


# -- a raw-socket server ------------------------------------------------------------------------------------


class RawServer:
    """HTTP/1.1 by hand, one thread per connection, so a handler can misbehave byte by byte."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.paths: list[str] = []
        self.bomb = _bomb()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(20)
        try:
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    piece = conn.recv(4096)
                    if not piece:
                        return
                    request += piece
                line, _, rest = request.partition(b"\r\n")
                path = line.split()[1].decode()
                self.paths.append(path)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (h.decode().partition(":") for h in rest.split(b"\r\n") if h)}
                self._route(conn, path, headers)
        except OSError:
            pass  # the client gave up on purpose (deadline, cap)

    def _send(self, conn, body: bytes, status: str = "200 OK", **headers) -> None:
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def _route(self, conn, path: str, headers: dict) -> None:
        if path == "/img.png":
            self._send(conn, PNG, Content_Type="image/png")
        elif path == "/accept-encoding":  # echo what the client asked for
            self._send(conn, headers.get("accept-encoding", "<none>").encode(), Content_Type="text/plain")
        elif path == "/dribble":  # a status line, then header bytes one by one: each read is quick
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Drip: ")
            for _ in range(300):  # 15 s at most, far past any deadline here
                if self.stop.wait(0.05):
                    return
                conn.sendall(b"a")
        elif path == "/silent":  # reads the request, never answers
            self.stop.wait(15)
        elif path.startswith("/hop/"):  # /hop/<n>: each hop answers after 0.4 s, n hops from the image
            n = int(path.rsplit("/", 1)[1])
            if self.stop.wait(0.4):
                return
            if n == 0:
                self._send(conn, PNG, Content_Type="image/png")
            else:
                self._send(conn, b"", "302 Found", Location=f"/hop/{n - 1}")
        elif path == "/bomb":
            self._send(conn, self.bomb, Content_Type="image/png", Content_Encoding="gzip, gzip")
        elif path == "/gzip-png":
            self._send(conn, gzip.compress(PNG), Content_Type="image/png", Content_Encoding="gzip")
        elif path == "/gzip-gzip-png":
            self._send(conn, gzip.compress(gzip.compress(PNG)), Content_Type="image/png",
                       Content_Encoding="gzip, gzip")
        elif path == "/deflate-png":
            self._send(conn, zlib.compress(PNG), Content_Type="image/png", Content_Encoding="deflate")
        elif path == "/brotli":
            self._send(conn, b"\x0b\x02\x80hello\x03", Content_Type="image/png", Content_Encoding="br")
        elif path == "/gzip-corrupt":
            self._send(conn, gzip.compress(PNG)[:12] + b"\xff" * 40, Content_Type="image/png",
                       Content_Encoding="gzip")
        else:
            self._send(conn, b"?", "404 Not Found")


@pytest.fixture(scope="module")
def server():
    srv = RawServer()
    try:
        yield srv
    finally:
        srv.close()


# -- isolation: loopback only -------------------------------------------------------------------------------


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


# -- helpers ------------------------------------------------------------------------------------------------


def timed_rejection(exc_type, source, settings, home):
    start = time.monotonic()
    err = rejected(exc_type, source, settings, home)
    return err, time.monotonic() - start


# -- 6: one deadline for the whole fetch ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_headers_dribbled_byte_by_byte_are_cut_at_the_total_deadline(server, tmp_path, home):
    settings = fetch_settings(tmp_path, read_timeout=2.0, total_timeout=1.0)  # every byte within read_timeout
    err, elapsed = timed_rejection(FetchError, server.url("/dribble"), settings, home)
    assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK, elapsed
    assert "total_timeout" in str(err)


@pytest.mark.timeout(60)
def test_a_server_that_never_answers_is_cut_at_the_total_deadline(server, tmp_path, home):
    settings = fetch_settings(tmp_path, read_timeout=10.0, total_timeout=1.0)
    err, elapsed = timed_rejection(FetchError, server.url("/silent"), settings, home)
    assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK, elapsed
    assert "total_timeout" in str(err)


@pytest.mark.timeout(60)
def test_redirect_hops_share_one_deadline(server, tmp_path, home):
    # 6 hops of 0.4 s each: every hop is well within read_timeout, the chain far over total_timeout.
    settings = fetch_settings(tmp_path, read_timeout=2.0, total_timeout=1.0, max_redirects=10)
    err, elapsed = timed_rejection(FetchError, server.url("/hop/6"), settings, home)
    assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK, elapsed
    assert "total_timeout" in str(err)
    # the same chain with time to spare still arrives
    part = load_media(server.url("/hop/2"), settings=fetch_settings(tmp_path, total_timeout=10.0))
    assert part.mime_type == "image/png"


@pytest.mark.timeout(60)
def test_a_slow_name_lookup_counts_against_the_deadline(server, tmp_path, home, monkeypatch):
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host, port, *args, **kwargs):
        if host == "slow-dns.test":  # a stand-in for a resolver that takes its time (no real lookup)
            release.wait(10)
            return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    settings = fetch_settings(tmp_path, connect_timeout=5.0, total_timeout=1.0)
    try:
        err, elapsed = timed_rejection(FetchError, f"http://slow-dns.test:{server.port}/img.png", settings, home)
    finally:
        release.set()
    assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK, elapsed
    assert "total_timeout" in str(err)


@pytest.mark.timeout(60)
def test_a_connect_that_hangs_is_cut_at_the_total_deadline(tmp_path, home):
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel accepts connections past a full backlog")
        except (TimeoutError, socket.timeout):
            pass
        finally:
            probe.close()
        settings = fetch_settings(tmp_path, connect_timeout=10.0, total_timeout=1.0)
        err, elapsed = timed_rejection(FetchError, f"http://127.0.0.1:{port}/img.png", settings, home)
        assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK, elapsed
        assert "total_timeout" in str(err)
    finally:
        for s in fillers:
            s.close()
        listener.close()


# -- 7: compression ------------------------------------------------------------------------------------------


def test_identity_encoding_is_requested(server, tmp_path):
    from mmagent.content.fetch import fetch_url

    settings = fetch_settings(tmp_path)
    body, _ = fetch_url(server.url("/accept-encoding"), settings.fetch, settings.limits)
    assert body == b"identity"


@pytest.mark.timeout(120)
def test_gzip_of_gzip_bomb_is_capped_on_decompressed_bytes_in_bounded_memory(server, tmp_path, home):
    assert len(server.bomb) < 64 * 1024  # a few KB on the wire ...
    settings = fetch_settings(tmp_path, **{"limits.max_bytes": BOMB_CAP})
    load_media(server.url("/img.png"), settings=settings)  # warm up: imports and first-use allocations
    tracemalloc.start()
    try:
        err = rejected(MediaTooLargeError, server.url("/bomb"), settings, home)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"bomb: peak traced memory {peak:,} bytes for a {BOMB_CAP:,} byte cap")
    assert peak < 2 * BOMB_CAP, f"peak {peak:,} bytes for a {BOMB_CAP:,} byte cap"  # ... 256 MB inflated
    assert f"{BOMB_CAP:,} byte limit" in str(err) and "decompressed" in str(err)


@pytest.mark.parametrize("path", ["/gzip-png", "/gzip-gzip-png", "/deflate-png"])
def test_encoded_responses_under_the_cap_decode(server, tmp_path, home, path):
    part = load_media(server.url(path), settings=fetch_settings(tmp_path), expect="image")
    assert part.mime_type == "image/png" and (part.width, part.height) == (20, 10)


def test_unsupported_or_broken_encodings_are_fetch_errors(server, tmp_path, home):
    err = rejected(FetchError, server.url("/brotli"), fetch_settings(tmp_path), home)
    assert "br" in str(err) and "Content-Encoding" in str(err)
    err = rejected(FetchError, server.url("/gzip-corrupt"), fetch_settings(tmp_path), home)
    assert "gzip" in str(err)


# -- also seen: data URLs are measured before they are decoded -----------------------------------------------


@pytest.mark.timeout(120)
def test_a_large_percent_encoded_data_url_is_quick(tmp_path, home):
    url = "data:image/png," + "%41" * (20 * 1024 * 1024)  # 60 MB of text, 20 MB of bytes
    settings = load_settings(cwd=tmp_path)  # default cap (50 MB): within it, so it is decoded ...
    start = time.monotonic()
    rejected(UnsupportedMediaError, url, settings, home)  # ... and found not to be a PNG
    assert time.monotonic() - start < 4
    cap = 10 * 1024 * 1024  # under a smaller cap it is refused before decoding
    small = load_settings(cwd=tmp_path, overrides={"limits.max_bytes": cap})
    start = time.monotonic()
    err = rejected(MediaTooLargeError, url, small, home)
    assert time.monotonic() - start < 2
    assert f"{cap:,} byte limit" in str(err)


@pytest.mark.timeout(60)
def test_an_unescaped_data_url_over_the_cap_is_refused(tmp_path, home):
    # 60 MB of plain characters are 60 MB of bytes: over the 50 MB default cap, refused while
    # parsing (it used to be decoded in full and refused only by the media guard afterwards).
    url = "data:image/png," + "A" * (60 * 1024 * 1024)
    with pytest.raises(MediaTooLargeError) as info:
        parse_data_url(url, 50 * 1024 * 1024)
    assert "52,428,800 byte limit" in str(info.value)
    err = rejected(MediaTooLargeError, url, load_settings(cwd=tmp_path), home)
    assert "52,428,800 byte limit" in str(err)


def test_data_url_size_checks_are_exact_at_the_cap():
    data = bytes(range(256)) * 4  # 1024 bytes
    pct = quote_from_bytes(data)
    assert parse_data_url("data:application/octet-stream," + pct, 1024)[0] == data
    with pytest.raises(MediaTooLargeError):
        parse_data_url("data:application/octet-stream," + pct, 1023)
    b64 = __import__("base64").b64encode(data).decode()
    spaced = " \n".join(b64[i:i + 76] for i in range(0, len(b64), 76))  # MIME-style line breaks
    assert parse_data_url("data:application/octet-stream;base64," + spaced, 1024)[0] == data
    assert parse_data_url("data:application/octet-stream;base64," + quote_from_bytes(b64.encode(), safe=""), 1024)[0] == data
    with pytest.raises(MediaTooLargeError):
        parse_data_url("data:application/octet-stream;base64," + b64, 1023)


def test_a_base64_data_url_far_over_the_cap_is_refused_before_decoding():
    url = "data:image/png;base64," + "QUFB" * (8 * 1024 * 1024)  # 32 MB of text
    start = time.monotonic()
    with pytest.raises(MediaTooLargeError) as info:
        parse_data_url(url, 1024 * 1024)
    assert time.monotonic() - start < 1
    assert "1,048,576 byte limit" in str(info.value)


def test_percent_decoding_matches_the_standard_decoder():
    import random
    import re
    from urllib.parse import unquote_to_bytes

    rng = random.Random(11)
    tokens = ["%41", "%3D", "%3d", "%e9", "%00", "%25", "=", "==", "A", "f", "0", "g", "\r\n", "\n", " ",
              "\t", "_", "+", "/", "é", "€", "%", "%4", "%%", "%g1"]
    decoded = 0
    for _ in range(20000):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 8)))
        try:
            got = parse_data_url("data:application/octet-stream," + text, 1 << 20)[0]
        except InvalidDataURLError:
            assert re.search(r"%(?![0-9A-Fa-f]{2})", text), text  # refused only for a stray '%'
            continue
        assert got == unquote_to_bytes(text), text
        decoded += 1
    assert decoded > 5000


def test_a_stray_percent_sign_is_an_invalid_data_url():
    with pytest.raises(InvalidDataURLError) as info:
        parse_data_url("data:image/png,%4" + "%41" * 1000, 1 << 20)
    assert "percent" in str(info.value)
