"""Download URL safety: which URLs, hosts and resolved addresses a download may reach.

Source URLs come from a third party, so a hostile one must not make the worker talk to
its own network (cloud metadata, the ECS agent, internal services). The rules:

* only ``http``/``https`` URLs with a host;
* every connection's host is resolved and *every* address it resolves to is checked;
  the socket then connects to the exact address that was checked, so DNS rebinding
  between check and connect cannot slip through. Redirects are followed by the caller
  one hop at a time, and each hop opens connections through the same check;
* refused: loopback, private, CGNAT (100.64/10), link-local, multicast, reserved and
  unspecified addresses, the deprecated IPv6 site-local ``fec0::/10`` (RFC 3879) and
  6to4 relay anycast ``192.88.99.0/24`` (RFC 7526) -- both still reach internal or
  unowned networks, and Python's ``is_global`` calls them global -- including those
  hidden in IPv4-mapped, IPv4-compatible, NAT64 (``64:ff9b::/96``, ``64:ff9b:1::/48``),
  6to4 and Teredo IPv6 forms;
* ``EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS``, when set, is the only set of hosts allowed, and
  those hosts may resolve to loopback/private/CGNAT addresses (local runs, VPC
  endpoints). Link-local addresses (169.254.169.254, 169.254.170.2, fe80::/10) and the
  IPv6 metadata address ``fd00:ec2::254`` stay refused for every host.

:func:`pinned_pool_manager` returns a urllib3 ``PoolManager`` whose connections apply
these rules at connect time.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from exportpipe.common.errors import UnsafeSource
from exportpipe.common.observability import redact_url

__all__ = [
    "AddressGuard",
    "UnsafeAddressError",
    "address_refusal",
    "check_url",
    "pinned_pool_manager",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPAT = ipaddress.IPv6Network("::/96")
_METADATA_V6 = ipaddress.IPv6Address("fd00:ec2::254")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# Deprecated ranges that ipaddress still reports as global.
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
_6TO4_RELAY = ipaddress.IPv4Network("192.88.99.0/24")


class UnsafeAddressError(NewConnectionError):
    """A connection was refused by :class:`AddressGuard` (carries the :class:`UnsafeSource`).

    It subclasses urllib3's ``NewConnectionError`` so urllib3 treats it as a failed
    connect; callers unwrap :attr:`unsafe` and fail permanently instead of retrying.
    """

    def __init__(self, conn: HTTPConnection, unsafe: UnsafeSource) -> None:
        super().__init__(conn, unsafe.message)
        self.unsafe = unsafe


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the embedding forms."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if any(addr in net for net in _NAT64):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _IPV4_COMPAT and int(addr) > 1:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def address_refusal(addr: IPAddress, *, private_allowed: bool) -> str | None:
    """Why ``addr`` must not be connected to, or ``None`` when it may.

    Args:
        addr: a resolved address.
        private_allowed: the host is on the allow-list, so loopback, private and CGNAT
            addresses are acceptable (link-local and multicast never are).

    Returns:
        A short description such as ``"link-local"`` for the refusal, or ``None``.
    """
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return "scoped IPv6"
        if addr == _METADATA_V6:
            return "cloud metadata"
        inner = _embedded_ipv4(addr)
        if inner is not None:
            why = address_refusal(inner, private_allowed=private_allowed)
            return f"{why} (embedded in IPv6)" if why else None
    if addr.is_link_local:
        return "link-local"
    if addr.is_multicast:
        return "multicast"
    if addr.is_unspecified or addr == _BROADCAST:
        return "unspecified"
    if private_allowed:
        return None
    if addr.is_loopback:
        return "loopback"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "carrier-grade NAT"
    if isinstance(addr, ipaddress.IPv6Address) and addr in _SITE_LOCAL:
        return "site-local"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _6TO4_RELAY:
        return "6to4 relay anycast"
    if addr.is_private:
        return "private"
    if addr.is_reserved or not addr.is_global:
        return "non-global"
    return None


@dataclass(frozen=True)
class AddressGuard:
    """Decides which hosts and addresses downloads may connect to.

    Attributes:
        allowed_hosts: when non-empty, the only hosts allowed (lower case; a leading
            ``.`` matches subdomains); those may resolve to private addresses.
    """

    allowed_hosts: frozenset[str] = frozenset()

    def check_host(self, host: str) -> bool:
        """Check ``host`` against the allow-list.

        Returns:
            True when the host is explicitly allowed (private addresses then accepted).

        Raises:
            UnsafeSource: an allow-list is set and ``host`` is not on it.
        """
        host = host.lower().rstrip(".").strip("[]")
        if not self.allowed_hosts:
            return False
        # ".example.com" matches example.com and every host under it.
        if any(
            host == entry.removeprefix(".") or (entry.startswith(".") and host.endswith(entry))
            for entry in self.allowed_hosts
        ):
            return True
        raise UnsafeSource(
            f"host {host!r} is not in EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS", reason="host_not_allowed"
        )

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """Resolve ``host`` and check every address; return ``getaddrinfo`` entries.

        Raises:
            UnsafeSource: the host is not allowed or any of its addresses is refused.
            OSError: the name does not resolve (transient: DNS may recover).
        """
        private_allowed = self.check_host(host)
        bare = host.strip("[]")
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"{host!r} resolved to no address")
        for info in infos:
            addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            why = address_refusal(addr, private_allowed=private_allowed)
            if why is not None:
                # Refuse the host even if other addresses are fine: a resolver could
                # otherwise be made to alternate between a public and an internal one.
                raise UnsafeSource(
                    f"host {bare!r} resolves to a {why} address ({addr})",
                    reason="unsafe_address",
                )
        return infos


def check_url(url: str, guard: AddressGuard) -> tuple[str, str, int]:
    """Check a URL's scheme and host before any connection; return (scheme, host, port).

    Raises:
        UnsafeSource: not http/https, no host, or a host not on the allow-list.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeSource(f"unparseable URL {redact_url(url)}", reason="bad_url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeSource(f"scheme {scheme!r} is not allowed", reason="bad_scheme")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeSource(f"URL {redact_url(url)} has no host", reason="bad_url")
    guard.check_host(host)
    return scheme, host, port or (443 if scheme == "https" else 80)


def _connect_checked(conn: HTTPConnection, guard: AddressGuard) -> socket.socket:
    """Resolve, check and connect to the first reachable *checked* address."""
    try:
        infos = guard.resolve(conn.host, conn.port or 80)
    except UnsafeSource as exc:
        raise UnsafeAddressError(conn, exc) from None
    except OSError as exc:
        raise NewConnectionError(conn, f"cannot resolve {conn.host!r}: {exc}") from exc
    last: OSError | None = None
    for family, socktype, proto, _canon, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            for level, option, value in conn.socket_options or ():
                sock.setsockopt(level, option, value)
            if isinstance(conn.timeout, int | float):  # not urllib3's "default" sentinel
                sock.settimeout(conn.timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            last = exc
            sock.close()
    raise NewConnectionError(conn, f"cannot connect to {conn.host!r}: {last}")


def pinned_pool_manager(guard: AddressGuard, **pool_kw: Any) -> PoolManager:
    """A urllib3 ``PoolManager`` whose every new connection goes through ``guard``.

    TLS still verifies the certificate against the URL's host name (SNI and hostname
    checks use the name, only the TCP connect uses the checked address). Environment
    proxies are not used.
    """

    class _Conn(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, guard)

    class _TLSConn(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, guard)

    class _Pool(HTTPConnectionPool):
        ConnectionCls = _Conn

    class _TLSPool(HTTPSConnectionPool):
        ConnectionCls = _TLSConn

    manager = PoolManager(**pool_kw)
    manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
    return manager
