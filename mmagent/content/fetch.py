"""Fetch media over http(s) without becoming an SSRF proxy.

Off unless `fetch.enabled`. Only http and https. Every address a host name resolves to must be
public (not loopback, private, link-local, CGNAT, multicast, reserved or a cloud metadata address)
unless `fetch.allow_private`; the connection goes to the address that was checked (no DNS
rebinding), redirects are followed by hand and checked again, and the body is streamed under the
byte cap with connect and read timeouts.

One deadline, `fetch.total_timeout`, covers the whole fetch: every name lookup, connect, TLS
handshake, header and body read of every redirect hop. Each socket operation waits at most what is
left of it, so a server that dribbles its headers a byte at a time is cut at the deadline.

Identity encoding is asked for. A server that compresses anyway (gzip, deflate, stacked) is
decompressed incrementally, a bounded piece at a time, with the byte cap applied to the
decompressed bytes: a compression bomb stops at the cap, never in memory. Other encodings are
refused.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

from ..config import FetchSettings, Limits
from ..errors import FetchError, ForbiddenSourceError, MediaTooLargeError, one_line

_REDIRECTS = (301, 302, 303, 307, 308)
_PIECE = 64 * 1024  # the most a decompressor hands on at a time
_MAX_ENCODINGS = 4  # stacked Content-Encodings accepted ("gzip, gzip" is two)
_DECODABLE = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class _DeadlinePassed(Exception):
    """fetch.total_timeout ran out (raised from inside the transport, turned into a FetchError)."""


def fetch_url(url: str, fetch: FetchSettings, limits: Limits) -> tuple[bytes, str | None]:
    """Return (body, content type) of a URL allowed by the settings, or raise a typed error."""
    if not fetch.enabled:
        raise ForbiddenSourceError(
            "fetching URLs is disabled (enable it with [fetch] enabled = true or MMAGENT_FETCH_ENABLED=1)"
        )
    import httpcore

    deadline = time.monotonic() + fetch.total_timeout
    too_slow = f"{_short(url)}: no complete answer within fetch.total_timeout={fetch.total_timeout:g}s"
    try:
        return _fetch(url, fetch, limits, deadline)
    except _DeadlinePassed:
        raise FetchError(too_slow) from None
    except httpcore.TimeoutException as exc:
        if time.monotonic() >= deadline - 0.01:
            raise FetchError(too_slow) from None
        if isinstance(exc, httpcore.ConnectTimeout):
            raise FetchError(f"timed out connecting to {_host(url)}") from None
        raise FetchError(f"timed out waiting for {_host(url)} to answer") from None


def _fetch(url: str, fetch: FetchSettings, limits: Limits, deadline: float) -> tuple[bytes, str | None]:
    import httpcore

    backend = _DeadlineBackend(deadline)
    timeouts = {"connect": fetch.connect_timeout, "read": fetch.read_timeout, "write": fetch.read_timeout,
                "pool": fetch.total_timeout}
    with httpcore.ConnectionPool(network_backend=backend, retries=0) as pool:
        for _ in range(fetch.max_redirects + 1):
            host, address, port = check_url(url, fetch, deadline=deadline)
            request = _pinned_request(url, host, address, port, timeouts)
            try:
                response = pool.handle_request(request)
            except (httpcore.TimeoutException, _DeadlinePassed):
                raise
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
                raise FetchError(f"cannot fetch {_short(url)}: {_describe(exc)}") from None
            try:
                headers = _headers(response.headers)
                if response.status in _REDIRECTS and "location" in headers:
                    try:
                        url = urljoin(url, headers["location"])
                    except ValueError:
                        raise FetchError(f"{_short(url)} redirects to an invalid URL") from None
                    continue
                if response.status != 200:
                    raise FetchError(f"{_short(url)} answered HTTP {response.status}")
                return _read_capped(response, headers, limits.max_bytes, deadline, url), headers.get("content-type")
            finally:
                response.close()
    raise FetchError(f"{_short(url)}: more than {fetch.max_redirects} redirects")


def check_url(url: str, fetch: FetchSettings, *, deadline: float | None = None) -> tuple[str, str, int]:
    """Validate scheme, host and every resolved address; return (host, address to use, port).
    With a `deadline` (time.monotonic()), the name lookup may not run past it."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed '[' in an IPv6 host
        raise ForbiddenSourceError(f"malformed URL: {_short(url)}") from None
    if parts.scheme not in ("http", "https"):
        raise ForbiddenSourceError(f"URL scheme '{parts.scheme}:' is not allowed (only http and https)")
    host = parts.hostname
    if not host:
        raise ForbiddenSourceError(f"URL has no host: {_short(url)}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif port == 0:  # out of range, not a number, or 0 (which used to mean "the default port")
        raise ForbiddenSourceError(f"URL has an invalid port: {_short(url)}")
    if fetch.allowed_hosts and host.lower() not in {h.lower() for h in fetch.allowed_hosts}:
        raise ForbiddenSourceError(f"host '{host}' is not in fetch.allowed_hosts")
    try:
        infos = _getaddrinfo(host, port, deadline)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host '{host}': {exc}") from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise FetchError(f"cannot resolve host '{host}': no addresses")
    if not fetch.allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise ForbiddenSourceError(
                    f"host '{host}' resolves to {address}, a non-public address (set fetch.allow_private to allow)"
                )
    return host, addresses[0], port


def _getaddrinfo(host: str, port: int, deadline: float | None) -> list:
    """socket.getaddrinfo, given up on at `deadline` (the lookup itself cannot be interrupted: it
    finishes in a daemon thread whose answer nobody waits for)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if deadline is None or literal:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    outcome: list = []

    def lookup() -> None:
        try:
            outcome.append((True, socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))

    worker = threading.Thread(target=lookup, name="mmagent-dns", daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.0))
    if not outcome:
        raise _DeadlinePassed
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: IPv4 in the low 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use translation prefix
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d form (also :: and ::1)


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _IPV4_COMPATIBLE or ip in _NAT64_LOCAL:
            return False
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is None and ip in _NAT64:  # a NAT64 gateway would forward to the embedded IPv4
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if mapped is not None:
            ip = mapped
    return ip.is_global and not ip.is_multicast


def _pinned_request(url: str, host: str, address: str, port: int, timeouts: dict):
    """A request that connects to the checked `address` while speaking to `host` (Host, SNI)."""
    import httpcore
    import httpx

    try:
        parsed = httpx.URL(url)  # normalises the path and query (percent-encoding) as before
        target = parsed.raw_path or b"/"
        netloc = parsed.netloc.decode("ascii").rsplit("@", 1)[-1]
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise ForbiddenSourceError(f"invalid URL {_short(url)}: {exc}") from None
    pinned = httpcore.URL(scheme=parsed.scheme.encode("ascii"), host=address.encode("ascii"), port=port,
                          target=target)
    headers = [(b"Host", netloc.encode("ascii")), (b"Accept", b"image/*,audio/*,video/*"),
               (b"Accept-Encoding", b"identity"), (b"User-Agent", b"mmagent")]
    return httpcore.Request(b"GET", pinned, headers=headers,
                            extensions={"timeout": timeouts, "sni_hostname": host})


def _headers(raw) -> dict[str, str]:
    """Response headers by lower-case name; repeated headers joined with ', '."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _read_capped(response, headers: dict[str, str], max_bytes: int, deadline: float, url: str) -> bytes:
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise MediaTooLargeError(f"{_short(url)} is {int(declared):,} bytes, over the {max_bytes:,} byte limit")
    encodings = [e.strip().lower() for e in headers.get("content-encoding", "").split(",")]
    encodings = [e for e in encodings if e and e != "identity"]
    for encoding in encodings:
        if encoding not in _DECODABLE:
            raise FetchError(f"{_short(url)}: unsupported Content-Encoding '{one_line(encoding, 40)}' "
                             "(identity was asked for; gzip and deflate are decoded)")
    if len(encodings) > _MAX_ENCODINGS:
        raise FetchError(f"{_short(url)}: {len(encodings)} stacked Content-Encodings (at most {_MAX_ENCODINGS})")
    import httpcore

    raw_size = 0

    def raw_chunks() -> Iterator[bytes]:
        nonlocal raw_size
        for chunk in response.iter_stream():
            raw_size += len(chunk)
            if raw_size > max_bytes:
                raise MediaTooLargeError(f"{_short(url)} is over the {max_bytes:,} byte limit")
            yield chunk

    pieces: Iterator[bytes] = raw_chunks()
    for encoding in reversed(encodings):  # the last one listed was applied last: undo it first
        pieces = _inflate(pieces, _DECODABLE[encoding], url)
    body = bytearray()
    try:
        for piece in pieces:
            body += piece
            if len(body) > max_bytes:
                what = f" once decompressed ({', '.join(encodings)})" if encodings else ""
                raise MediaTooLargeError(f"{_short(url)} is over the {max_bytes:,} byte limit{what}")
            if time.monotonic() > deadline:
                raise _DeadlinePassed
    except (httpcore.TimeoutException, _DeadlinePassed):
        raise
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        raise FetchError(f"{_short(url)}: {_describe(exc)}") from None
    return bytes(body)


def _inflate(chunks: Iterator[bytes], kind: str, url: str) -> Iterator[bytes]:
    """Decompress `chunks` (gzip: any number of members; deflate: zlib-wrapped or raw), handing
    on at most _PIECE bytes at a time: nothing is ever inflated beyond what the reader takes."""
    wbits = 31 if kind == "gzip" else 15
    inflater = zlib.decompressobj(wbits)
    started = False
    for chunk in chunks:
        data = chunk
        while data or started:
            try:
                out = inflater.decompress(data, _PIECE)
            except zlib.error as exc:
                if kind == "deflate" and not started and wbits == 15:  # servers often send raw deflate
                    wbits, inflater = -15, zlib.decompressobj(-15)
                    continue
                raise FetchError(f"{_short(url)}: the {kind}-encoded body does not decompress ({exc})") from None
            started = True
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data
                if data and kind == "gzip":  # another gzip member follows
                    inflater = zlib.decompressobj(wbits)
                    continue
                break  # trailing bytes after a deflate stream are ignored
            data = inflater.unconsumed_tail
            if not data and len(out) < _PIECE:
                break  # all input taken and nothing more pending: wait for the next chunk
    if not inflater.eof:
        raise FetchError(f"{_short(url)}: the {kind}-encoded body ends early")


class _DeadlineBackend:
    """httpcore's socket backend with every wait cut to what is left before the deadline."""

    def __init__(self, deadline: float):
        import httpcore

        self._inner = httpcore.SyncBackend()
        self.deadline = deadline

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = _call(self.deadline, timeout, lambda t: self._inner.connect_tcp(
            host, port, timeout=t, local_address=local_address, socket_options=socket_options))
        return _DeadlineStream(stream, self.deadline)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise FetchError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - used by retries, which are off
        time.sleep(min(seconds, max(self.deadline - time.monotonic(), 0.0)))


class _DeadlineStream:
    def __init__(self, inner, deadline: float):
        self._inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _call(self.deadline, timeout, lambda t: self._inner.read(max_bytes, t))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        return _call(self.deadline, timeout, lambda t: self._inner.write(buffer, t))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        inner = _call(self.deadline, timeout, lambda t: self._inner.start_tls(ssl_context, server_hostname, t))
        return _DeadlineStream(inner, self.deadline)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


def _call(deadline: float, timeout: float | None, operation):
    """Run a socket `operation(timeout)` with the timeout cut to what is left before `deadline`."""
    import httpcore

    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed
    try:
        return operation(left if timeout is None else min(timeout, left))
    except httpcore.TimeoutException:
        if time.monotonic() >= deadline - 0.01:
            raise _DeadlinePassed from None
        raise


def _describe(exc: BaseException) -> str:
    return one_line(str(exc) or type(exc).__name__, 160)


def _host(url: str) -> str:
    try:
        return one_line(urlsplit(url).hostname or url, 120)
    except ValueError:
        return _short(url)


def _short(url: str) -> str:
    return one_line(url, 120)
