"""Where provider traffic may go: no cloud metadata service, no link-local address, and loopback or
private networks only for a provider marked `allow_private` (a local Ollama or vLLM).

Two checks, one rule (`refusal(address, allow_private)`):
- `check_url(url, allow_private)` when a base URL is set (config load, console, CLI): the host as
  written, including the numeric spellings of an IPv4 address that resolvers accept (`0x7f000001`,
  `2130706433`, `0177.0.0.1`, `127.1`) and IPv4 inside IPv6 (`::ffff:169.254.169.254`). A host
  name is not resolved here (a config must load without the network); the next check covers it.
- `guard_address(host, port, base_url)` at connect time (providers/http.py's connection class): the
  host is resolved, every address it resolves to is checked, and the connection goes to the checked
  address itself, so a DNS answer that changes between check and connect (rebinding) gains nothing.
  Redirects are never followed (http.py passes redirect=False), so a 30x cannot lead elsewhere.

Failure mode: a refused connection raises EgressRefused (an OSError), which http.py reports as a
connection failure (the adapter's "Could not reach the upstream provider"); the reason and the
address are logged, never sent to the API client.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services, by name and address: refused even for allow_private providers.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
ALWAYS_REFUSED = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16",      # IPv4 link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack metadata)
    "fe80::/10",           # IPv6 link-local
    "fd00:ec2::254/128",   # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",    # Azure host services
    "224.0.0.0/4", "ff00::/8",  # multicast: never an HTTP server
))
# Reachable only with allow_private: this machine and networks that are not the internet.
PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "172.16.0.0/12", "192.0.0.0/24",
    "192.168.0.0/16", "198.18.0.0/15", "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fec0::/10",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")

# Base URLs (as memo.py holds them) of providers marked allow_private; memo.py keeps it current.
_private_ok: frozenset[str] = frozenset()
_on_withdrawn: list[Callable[[str], None]] = []


class EgressRefused(OSError):
    pass


def allow_private_for(base_urls: Iterable[str]) -> None:
    """The base URLs whose provider is marked allow_private. A URL losing the mark has its pooled
    connections closed: a kept-alive connection to a private address must not outlive the permission."""
    global _private_ok
    before, _private_ok = _private_ok, frozenset(u.rstrip("/") for u in base_urls)
    for url in before - _private_ok:
        for forget in _on_withdrawn:
            forget(url)


def on_withdrawn(forget: Callable[[str], None]) -> None:
    """`forget(base_url)` is called when a base URL loses allow_private (http.py drops its pool)."""
    _on_withdrawn.append(forget)


def private_allowed(base_url: str) -> bool:
    return base_url.rstrip("/") in _private_ok


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why traffic may not go to `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%")[0])
        inner = _embedded_ipv4(address)
        if inner is not None:
            return refusal(inner, allow_private)
    if any(address in net for net in ALWAYS_REFUSED if net.version == address.version):
        return f"{address} is a link-local or cloud metadata address, which is never allowed"
    if not allow_private and any(address in net for net in PRIVATE if net.version == address.version):
        return (f"{address} is a loopback or private address; mark the provider allow_private "
                "to reach a server on this machine or network (e.g. a local Ollama or vLLM)")
    return None


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address if it is written as one, in any spelling a resolver accepts."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:  # inet_aton takes hex, octal, decimal and short forms, as getaddrinfo does
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_refusal(host: str, allow_private: bool) -> str | None:
    """Why a host as written may not be used (None: nothing known against it before resolving)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return f"{name} is a cloud metadata service, which is never allowed"
    address = literal_address(name)
    if address is not None:
        reason = refusal(address, allow_private)
        spelled = name.split("%")[0]
        return f"{spelled} means {reason}" if reason and spelled != str(address) else reason
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        return (f"{name} is this machine; mark the provider allow_private to reach a server on this "
                "machine or network (e.g. a local Ollama or vLLM)")
    return None


def check_url(url: str, allow_private: bool) -> str | None:
    """Why a provider base URL may not be used (None: it may, pending the connect-time check)."""
    host = urlsplit(url).hostname
    if not host:
        return None  # the URL checks elsewhere report a missing host
    return host_refusal(host, allow_private)


def guard_address(host: str, port: int, base_url: str, allow_private: bool | None = None) -> list[str]:
    """Resolve `host` and check every address it resolves to; returns them, to connect to in order.
    `allow_private` None: as the provider of `base_url` is marked; a bool: as the caller says (a
    one-off probe of an address an operator typed, before any provider has it)."""
    allow = private_allowed(base_url) if allow_private is None else allow_private
    reason = host_refusal(host, allow)
    if reason is None:
        addresses = []
        for *_, sockaddr in socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM):
            if (reason := refusal(ipaddress.ip_address(sockaddr[0].split("%")[0]), allow)) is not None:
                break
            if sockaddr[0] not in addresses:
                addresses.append(sockaddr[0])
        else:
            return addresses
    log.warning("refused a connection to %s: %s", host, reason)
    raise EgressRefused(f"egress refused: {reason}")


def guarded_connection(cls: type[HTTPConnection], base_url: str,
                       allow_private: bool | None = None) -> type[HTTPConnection]:
    """`cls` (urllib3's HTTP or HTTPS connection) connecting only where guard_address allows."""

    class GuardedConnection(cls):  # type: ignore[misc, valid-type]
        def _new_conn(self) -> socket.socket:
            try:  # EgressRefused passes as it is: a connection failure, never a timeout
                addresses = guard_address(self.host, self.port, base_url, allow_private)
            except socket.gaierror as e:
                raise NameResolutionError(self.host, self, e) from e
            error: OSError | None = None
            for address in addresses:  # the checked addresses themselves: no second lookup
                try:
                    return create_connection((address, self.port), self.timeout,
                                             source_address=self.source_address, socket_options=self.socket_options)
                except TimeoutError as e:
                    raise ConnectTimeoutError(
                        self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})") from e
                except OSError as e:
                    error = e
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}")

    return GuardedConnection
