from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from exportpipe.common.errors import UnsafeSource
from exportpipe.worker.safety import AddressGuard, address_refusal, check_url


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("169.254.169.254", "link-local"),
        ("169.254.170.2", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "unspecified"),
        ("fd00:ec2::254", "cloud metadata"),
        ("::ffff:127.0.0.1", "loopback (embedded in IPv6)"),
        ("::ffff:169.254.169.254", "link-local (embedded in IPv6)"),
        ("64:ff9b::a9fe:a9fe", "link-local (embedded in IPv6)"),
        ("64:ff9b::7f00:1", "loopback (embedded in IPv6)"),
        ("64:ff9b:1::a00:1", "private (embedded in IPv6)"),
        ("2002:a9fe:a9fe::1", "link-local (embedded in IPv6)"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("feff:ffff::1", "site-local"),
        ("192.88.99.1", "6to4 relay anycast"),
        ("::ffff:192.88.99.1", "6to4 relay anycast (embedded in IPv6)"),
    ],
)
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), private_allowed=False) == why


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), private_allowed=False) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "100.64.3.4", "::ffff:10.0.0.5"])
def test_allowed_hosts_may_be_private(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), private_allowed=True) is None


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "169.254.170.2", "fd00:ec2::254", "64:ff9b::a9fe:a9fe"]
)
def test_metadata_stays_refused_for_allowed_hosts(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), private_allowed=True) is not None


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/", "http:///nohost", "//x/y"]
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(UnsafeSource):
        check_url(url, AddressGuard())


def test_allow_list_is_exclusive_and_matches_subdomains() -> None:
    guard = AddressGuard(frozenset({"files.example.com", ".cdn.example.net"}))
    assert check_url("https://files.example.com/a?sig=1", guard)[1] == "files.example.com"
    assert check_url("https://eu.cdn.example.net/a", guard)[1] == "eu.cdn.example.net"
    with pytest.raises(UnsafeSource) as info:
        check_url("https://other.example.com/a", guard)
    assert info.value.reason == "host_not_allowed"


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    real = socket.getaddrinfo

    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port) if ":" not in a else (a, port, 0, 0),
                )
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_names_resolving_inside_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(
        monkeypatch,
        {
            "internal.example": ["10.0.0.7"],
            "meta.example": ["169.254.169.254"],
            "nat64.example": ["64:ff9b::a9fe:a9fe"],
        },
    )
    guard = AddressGuard()
    for host in ("internal.example", "meta.example", "nat64.example"):
        with pytest.raises(UnsafeSource) as info:
            guard.resolve(host, 443)
        assert info.value.reason == "unsafe_address"


def test_any_internal_answer_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # A rebinding resolver that mixes a public and an internal answer.
    _fake_dns(monkeypatch, {"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(UnsafeSource):
        AddressGuard().resolve("rebind.example", 80)


def test_public_name_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {"files.example": ["93.184.216.34"]})
    infos = AddressGuard().resolve("files.example", 443)
    assert infos[0][4][0] == "93.184.216.34"
