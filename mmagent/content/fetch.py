"""Fetch media over http(s) without becoming an SSRF proxy.

Off unless `fetch.enabled`. Only http and https. Every address a host name resolves to must be
public (not loopback, private, link-local, CGNAT, multicast, reserved or a cloud metadata address)
unless `fetch.allow_private`; the connection goes to the address that was checked (no DNS
rebinding), redirects are followed by hand and checked again, and the body is streamed under the
byte cap with connect, read and total timeouts.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

from ..config import FetchSettings, Limits
from ..errors import FetchError, ForbiddenSourceError, MediaTooLargeError, one_line


def fetch_url(url: str, fetch: FetchSettings, limits: Limits) -> tuple[bytes, str | None]:
    """Return (body, content type) of a URL allowed by the settings, or raise a typed error."""
    if not fetch.enabled:
        raise ForbiddenSourceError(
            "fetching URLs is disabled (enable it with [fetch] enabled = true or MMAGENT_FETCH_ENABLED=1)"
        )
    import httpx

    deadline = time.monotonic() + fetch.total_timeout
    timeout = httpx.Timeout(fetch.read_timeout, connect=fetch.connect_timeout)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(fetch.max_redirects + 1):
            host, address, port = check_url(url, fetch)
            try:
                request = _pinned_request(client, url, host, address, port)
            except httpx.InvalidURL as exc:
                raise ForbiddenSourceError(f"invalid URL {_short(url)}: {exc}") from None
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectTimeout:
                raise FetchError(f"timed out connecting to {host}") from None
            except httpx.TimeoutException:
                raise FetchError(f"timed out waiting for {host} to answer") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"cannot fetch {_short(url)}: {exc}") from None
            try:
                if response.is_redirect and "location" in response.headers:
                    try:
                        url = urljoin(url, response.headers["location"])
                    except ValueError:
                        raise FetchError(f"{_short(url)} redirects to an invalid URL") from None
                    continue
                if response.status_code != 200:
                    raise FetchError(f"{_short(url)} answered HTTP {response.status_code}")
                return _read_capped(response, limits.max_bytes, deadline, url), response.headers.get(
                    "content-type"
                )
            finally:
                response.close()
    raise FetchError(f"{_short(url)}: more than {fetch.max_redirects} redirects")


def check_url(url: str, fetch: FetchSettings) -> tuple[str, str, int]:
    """Validate scheme, host and every resolved address; return (host, address to use, port)."""
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
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host '{host}': {exc}") from None
    addresses = [info[4][0] for info in infos]
    if not fetch.allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise ForbiddenSourceError(
                    f"host '{host}' resolves to {address}, a non-public address (set fetch.allow_private to allow)"
                )
    return host, addresses[0], port


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


def _pinned_request(client, url: str, host: str, address: str, port: int):
    """A request that connects to the checked `address` while speaking to `host` (Host, SNI)."""
    import httpx

    parsed = httpx.URL(url)
    ip_host = f"[{address}]" if ":" in address else address
    pinned = parsed.copy_with(host=ip_host.strip("[]"), port=port)
    headers = {"Host": parsed.netloc.decode("ascii").rsplit("@", 1)[-1], "Accept": "image/*,audio/*,video/*"}
    return client.build_request("GET", pinned, headers=headers, extensions={"sni_hostname": host})


def _read_capped(response, max_bytes: int, deadline: float, url: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaTooLargeError(f"{_short(url)} is {int(declared):,} bytes, over the {max_bytes:,} byte limit")
    import httpx

    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise MediaTooLargeError(f"{_short(url)} is over the {max_bytes:,} byte limit")
            if time.monotonic() > deadline:
                raise FetchError(f"{_short(url)}: download took too long")
    except httpx.TimeoutException:
        raise FetchError(f"{_short(url)}: timed out reading the response") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{_short(url)}: {exc}") from None
    return bytes(body)


def _short(url: str) -> str:
    return one_line(url, 120)
