"""Fetch images from http(s) URLs for endpoint requests, with SSRF and size guards."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlparse

import httpx


@dataclass(frozen=True)
class FetchPolicy:
    """Rules for image URLs in requests.

    allow_private: also fetch from loopback, private, link-local and reserved addresses
    (off by default: a public server must not be a proxy into its own network).
    """

    timeout_s: float = 10.0  # for the whole download: connecting, every redirect, every read
    max_bytes: int = 32 << 20
    allow_private: bool = False
    max_redirects: int = 3


def _checked_address(host: str, port: int, policy: FetchPolicy) -> str:
    """The address to connect to for `host`, resolved once here and checked: the connection is made
    to it, so a name that resolves again to another address (DNS rebinding) is not looked up twice."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from None
    if not infos:
        raise ValueError(f"cannot resolve host {host!r}")
    if not policy.allow_private:
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global or address.is_multicast:
                raise ValueError(
                    f"host {host!r} resolves to {address}, a loopback/private/link-local address; such URLs "
                    "are refused unless the server allows them (--allow-private-urls)"
                )
    return infos[0][4][0]


def _pinned(parsed, address: str, port: int) -> tuple[str, dict, dict]:
    """The request for `parsed` sent to `address`: its URL, headers (Host: the URL's host and port as
    written) and extensions (TLS's server name and certificate check: the URL's host)."""
    userinfo, _, host = parsed.netloc.rpartition("@")
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    netloc = f"{userinfo}@{netloc}" if userinfo else netloc
    return parsed._replace(netloc=netloc).geturl(), {"Host": host}, {"sni_hostname": parsed.hostname}


def fetch_url(url: str, policy: FetchPolicy = FetchPolicy()) -> bytes:
    """Download `url` (http or https only) and return its bytes.

    Each redirect hop is checked again. The whole download has `policy.timeout_s`, however slowly
    the other server sends. Raises ValueError with a readable reason, and ResponseTooLarge (a
    ValueError) when the body exceeds `policy.max_bytes`.
    """
    deadline = time.monotonic() + policy.timeout_s
    with httpx.Client(timeout=policy.timeout_s, follow_redirects=False) as client:
        for _ in range(policy.max_redirects + 1):
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"only http(s) URLs are accepted, got {url[:100]!r}")
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            target, headers, extensions = _pinned(parsed, _checked_address(parsed.hostname, port, policy), port)
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise httpx.TimeoutException("no time left")
                with client.stream("GET", target, headers=headers, extensions=extensions, timeout=left) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise ValueError(f"GET {url[:100]} answered HTTP {response.status_code}")
                    return _read_limited(response, policy.max_bytes, deadline)
            except httpx.TimeoutException:
                raise ValueError(f"GET {url[:100]} did not finish within {policy.timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise ValueError(f"GET {url[:100]} failed: {exc}") from None
    raise ValueError(f"more than {policy.max_redirects} redirects")


class ResponseTooLarge(ValueError):
    pass


def _read_limited(response: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise httpx.TimeoutException("the download's deadline passed")
        total += len(chunk)
        if total > max_bytes:
            raise ResponseTooLarge(f"the image at the URL is over the limit of {max_bytes >> 20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)
