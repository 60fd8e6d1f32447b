"""The base-URL policy for providers (SPEC section 4): normalisation and SSRF refusal.

Base URLs carry no query string (a key put there would be shown wherever the URL is).

Used by provider create/update, and by the outbound HTTP client (through `is_blocked_ip` and
`parse_allowlist`) so that both refuse the same addresses.

The URL is split here by hand rather than with `urllib.parse`, and IPv4 hosts are read in every
spelling `inet_aton` and browsers accept (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`),
because parsers that disagree about a URL are how SSRF filters get bypassed. Anything this module
cannot read unambiguously is refused. Host names are not resolved here: the outbound client checks
every address a name resolves to, at connection time, with `is_blocked_ip`.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from flask import Flask, current_app

from app.errors import InvalidInput

INVALID_BASE_URL = "Invalid provider base URL."
MAX_LENGTH = 2048

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Refused always, even when allow-listed: link-local ranges and cloud metadata services.
ALWAYS_BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16",     # IPv4 link-local: AWS, GCP, Azure, OpenStack, DigitalOcean metadata (169.254.169.254)
    "fe80::/10",          # IPv6 link-local
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    "100.100.100.200/32", # Alibaba Cloud metadata
    "168.63.129.16/32",   # Azure WireServer / host agent
    "192.0.0.192/32",     # Oracle Cloud legacy metadata
))
ALWAYS_BLOCKED_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com",
    "instance-data", "instance-data.ec2.internal", "metadata.tencentyun.com",
})

# Refused unless allow-listed: everything that is not a public unicast address.
PRIVATE_NETWORKS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",          # "this network", including the unspecified 0.0.0.0
    "10.0.0.0/8",         # private
    "100.64.0.0/10",      # carrier-grade NAT
    "127.0.0.0/8",        # loopback
    "172.16.0.0/12",      # private
    "192.0.0.0/24",       # IETF protocol assignments
    "192.0.2.0/24",       # documentation (TEST-NET-1)
    "192.88.99.0/24",     # 6to4 relay anycast
    "192.168.0.0/16",     # private
    "198.18.0.0/15",      # benchmarking
    "198.51.100.0/24",    # documentation (TEST-NET-2)
    "203.0.113.0/24",     # documentation (TEST-NET-3)
    "224.0.0.0/4",        # multicast
    "240.0.0.0/4",        # reserved, including the broadcast 255.255.255.255
    "::/8",               # unspecified, loopback, IPv4-compatible, reserved (mapped and NAT64: see below)
    "64:ff9b:1::/48",     # local-use NAT64
    "100::/64",           # discard
    "2001::/23",          # IETF protocol assignments, including Teredo
    "2001:db8::/32",      # documentation
    "3fff::/20",          # documentation
    "fc00::/7",           # unique local (ULA)
    "fec0::/10",          # deprecated site-local
    "ff00::/8",           # multicast
))
# Names that mean "this machine" or "this private network" (RFC 6761, RFC 8375, ICANN .internal).
PRIVATE_HOST_SUFFIXES = ("localhost", "localdomain", "local", "internal", "home.arpa")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_DECIMAL_RE = re.compile(r"^[0-9]+$")
_HEX_RE = re.compile(r"^0[xX][0-9A-Fa-f]*$")
_IPV6_CHARS_RE = re.compile(r"^[0-9A-Fa-f:.]+$")

# Details shown next to the field.
SCHEME = "Use an http or https URL."
NOT_ABSOLUTE = "Use an absolute URL with a host, such as https://api.example.com/v1."
TOO_LONG = f"URLs cannot be longer than {MAX_LENGTH} characters."
CONTROL = "URLs cannot contain spaces or control characters."
BACKSLASH = "URLs cannot contain backslashes."
USERINFO = "URLs cannot contain a user name or password."
FRAGMENT = "URLs cannot contain a fragment (#)."
QUERY = "Remove the query string: put keys in the key field, not in the URL."
BAD_PORT = "The port must be a number from 1 to 65535."
BAD_HOST = "The host is not a valid host name or IP address."
NON_ASCII_HOST = "Use the ASCII (punycode) form of the host name."
PERCENT_HOST = "The host cannot be percent-encoded."
METADATA = "Link-local and cloud metadata addresses are not allowed."
PRIVATE = "Private, loopback and reserved addresses are not allowed unless listed in PRIVATE_BASE_URL_ALLOWLIST."


@dataclass(frozen=True)
class Allowlist:
    """PRIVATE_BASE_URL_ALLOWLIST, parsed: exact host names, and networks for IP literals."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def allows_host(self, host: str) -> bool:
        return _strip_dot(host.lower()) in self.hosts

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def parse_allowlist(raw: str | Allowlist | None) -> Allowlist:
    """Parse comma-separated host names and CIDRs (a bare IP means just that address).

    :raise ValueError: an entry is neither a host name nor a network (names the entry).
    """
    if isinstance(raw, Allowlist):
        return raw
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in (raw or "").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = _strip_dot(entry)
        if not _is_hostname(name) or _ends_in_number(name):
            raise ValueError(f"PRIVATE_BASE_URL_ALLOWLIST: {entry!r} is not a host name, IP address or CIDR.")
        hosts.add(name)
    return Allowlist(frozenset(hosts), tuple(networks))


def is_blocked_ip(ip: IPAddress | str, allowlist: Allowlist | str = "", *, host: str = "") -> bool:
    """True when a connection to `ip` must be refused.

    `host` is the name `ip` was resolved from, if any: an allow-listed name may resolve to private
    addresses. Link-local and metadata addresses are refused whatever the allowlist says.
    """
    return _ip_refusal(ipaddress.ip_address(ip), parse_allowlist(allowlist), host) is not None


def normalize_base_url(raw: str | None, allowlist: str | Allowlist = "", *, allow_query: bool = False) -> str:
    """Return the normalised base URL ('' means the type's default endpoint).

    Lowercases the scheme and host, writes IP addresses in their canonical form, drops the
    trailing slash of the path and keeps the path as given.

    A base URL may not have a query string (not even an empty `?`): a key put there
    (`https://gw/v1?api-key=...`) would be shown to everyone who can see the provider, e.g. every
    member through /resolution. Keys go in the key field; the calls that need query parameters
    (Azure's `api-version`) add them themselves. `allow_query` is for the outbound client, which
    checks full request URLs (base URL plus the call's own path and query) against the same policy.

    :raise InvalidInput: "Invalid provider base URL." with a detail saying why.
    """
    value = (raw or "").strip()
    if not value:
        return ""
    _check_characters(value)
    scheme, authority, rest = _split(value)
    host, port = _split_authority(authority)
    host_text = _check_host(host, parse_allowlist(allowlist))
    path, has_query, query = rest.partition("?")
    if has_query and not allow_query:
        raise _fail(QUERY)
    url = f"{scheme}://{host_text}" + (f":{port}" if port else "") + path.rstrip("/")
    return url + (f"?{query}" if query else "")


def _fail(detail: str) -> InvalidInput:
    return InvalidInput(INVALID_BASE_URL, detail=detail, field="base_url")


# --- one function per rule -------------------------------------------------------------------

def _check_characters(value: str) -> None:
    """Length, whitespace and control characters (also percent-encoded ones), backslashes."""
    if len(value) > MAX_LENGTH:
        raise _fail(TOO_LONG)
    if any(_is_control_or_space(ch) for ch in value):
        raise _fail(CONTROL)
    if any(b < 0x20 or b == 0x7F for b in unquote_to_bytes(value)):
        raise _fail(CONTROL)
    if "\\" in value:  # browsers read it as "/", other parsers as a character of the host
        raise _fail(BACKSLASH)


def _is_control_or_space(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")


def _split(value: str) -> tuple[str, str, str]:
    """Return (scheme, authority, path-and-query) of an absolute http(s) URL."""
    match = _SCHEME_RE.match(value)
    if not match:
        raise _fail(NOT_ABSOLUTE if "://" not in value else SCHEME)
    scheme = match.group(1).lower()
    if scheme not in ("http", "https"):
        raise _fail(SCHEME)
    if "#" in value:
        raise _fail(FRAGMENT)
    rest = value[match.end():]
    if not rest.startswith("//"):
        raise _fail(NOT_ABSOLUTE)
    rest = rest[2:]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:end], rest[end:]
    if "@" in authority:
        raise _fail(USERINFO)
    if not authority:
        raise _fail(NOT_ABSOLUTE)
    return scheme, authority, rest


def _split_authority(authority: str) -> tuple[str, str]:
    """Return (host, port) with the port canonical ('' when absent)."""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _fail(BAD_HOST)
        host, after = authority[: close + 1], authority[close + 1:]
        if after and not after.startswith(":"):
            raise _fail(BAD_HOST)
        port = after[1:] if after else None
    elif authority.count(":") > 1:
        raise _fail(BAD_HOST)  # an IPv6 address must be in brackets
    else:
        host, sep, port = authority.partition(":")
        port = port if sep else None
    if port is None:
        return host, ""
    if not _DECIMAL_RE.match(port) or not 1 <= int(port) <= 65535:
        raise _fail(BAD_PORT)
    return host, str(int(port))


def _check_host(host: str, allowlist: Allowlist) -> str:
    """Refuse the host or return its normalised text."""
    if not host:
        raise _fail(NOT_ABSOLUTE)
    if "%" in host:
        raise _fail(PERCENT_HOST)
    if not host.isascii():
        raise _fail(NON_ASCII_HOST)
    host = host.lower()
    if host.startswith("["):
        ip = _parse_ipv6(host[1:-1])
        _check_ip(ip, allowlist)
        return f"[::ffff:{ip.ipv4_mapped}]" if ip.ipv4_mapped else f"[{ip.compressed}]"
    name = _strip_dot(host)
    if _ends_in_number(name):
        ip4 = _parse_ipv4(name)
        _check_ip(ip4, allowlist)
        return str(ip4)
    if not _is_hostname(name):
        raise _fail(BAD_HOST)
    _check_hostname(name, allowlist)
    return name


def _check_hostname(name: str, allowlist: Allowlist) -> None:
    if name in ALWAYS_BLOCKED_HOSTS:
        raise _fail(METADATA)
    private = any(name == s or name.endswith("." + s) for s in PRIVATE_HOST_SUFFIXES)
    if private and not allowlist.allows_host(name):
        raise _fail(PRIVATE)


def _check_ip(ip: IPAddress, allowlist: Allowlist) -> None:
    refusal = _ip_refusal(ip, allowlist, "")
    if refusal:
        raise _fail(refusal)


def _ip_refusal(ip: IPAddress, allowlist: Allowlist, host: str) -> str | None:
    """METADATA, PRIVATE or None for an address, looking inside IPv6 forms that carry an IPv4 one."""
    embedded = _embedded_ipv4(ip)
    if any(_in(a, ALWAYS_BLOCKED_NETWORKS) for a in (ip, *embedded)):
        return METADATA
    if host and allowlist.allows_host(host):
        return None
    # IPv4-mapped and well-known NAT64 addresses are only other spellings of the IPv4 address.
    spelling_of_ipv4 = isinstance(ip, IPv6Address) and (ip.ipv4_mapped is not None or ip in _NAT64)
    candidates = embedded if spelling_of_ipv4 else [ip, *embedded]
    if any(_in(a, PRIVATE_NETWORKS) and not allowlist.allows_ip(a) for a in candidates):
        return PRIVATE
    return None


def _embedded_ipv4(ip: IPAddress) -> list[IPv4Address]:
    """IPv4 addresses an IPv6 address routes to: mapped, compatible, NAT64, 6to4, Teredo."""
    if isinstance(ip, IPv4Address):
        return []
    found: list[IPv4Address] = []
    if ip.ipv4_mapped:
        found.append(ip.ipv4_mapped)
    low32 = IPv4Address(int(ip) & 0xFFFFFFFF)
    compatible = ip in _IPV4_COMPATIBLE and int(ip) > 1  # :: and ::1 are not IPv4-compatible (RFC 4291)
    if compatible or ip in _NAT64 or ip in _NAT64_LOCAL:
        found.append(low32)
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)
    return found


_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")


def _in(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


# --- host parsing ------------------------------------------------------------------------------

def _strip_dot(name: str) -> str:
    """`localhost.` and `localhost` are the same host."""
    return name[:-1] if name.endswith(".") else name


def _is_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL_RE.match(label) for label in name.split("."))


def _ends_in_number(name: str) -> bool:
    """WHATWG URL rule: a host whose last label is a number is an IPv4 address (or invalid)."""
    last = name.rsplit(".", 1)[-1]
    return bool(_DECIMAL_RE.match(last) or _HEX_RE.match(last))


def _parse_ipv4(name: str) -> IPv4Address:
    """Read an IPv4 address the way inet_aton does: 1 to 4 parts, each decimal, 0x-hex or 0-octal;
    the last part fills the remaining bytes (`127.1` is 127.0.0.1, `2130706433` too)."""
    parts = name.split(".")
    if len(parts) > 4:
        raise _fail(BAD_HOST)
    numbers = [_parse_ipv4_part(p) for p in parts]
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise _fail(BAD_HOST)
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return IPv4Address(value)


def _parse_ipv4_part(part: str) -> int:
    if _HEX_RE.match(part):
        return int(part[2:] or "0", 16)
    if not _DECIMAL_RE.match(part):
        raise _fail(BAD_HOST)
    if len(part) > 1 and part.startswith("0"):
        if not re.match(r"^[0-7]+$", part):
            raise _fail(BAD_HOST)
        return int(part, 8)
    return int(part)


def _parse_ipv6(text: str) -> IPv6Address:
    if not _IPV6_CHARS_RE.match(text):
        raise _fail(BAD_HOST)  # no zone ids, nothing but hex digits, colons and an IPv4 tail
    try:
        return IPv6Address(text)
    except ValueError:
        raise _fail(BAD_HOST) from None


# --- the app's allowlist -----------------------------------------------------------------------

ALLOWLIST_EXTENSION = "switchboard.allowlist"


class ParsedAllowlist(NamedTuple):
    """An app's parsed allowlist and the setting it was parsed from."""

    source: str
    allowlist: Allowlist


def load_allowlist(app: Flask) -> Allowlist:
    """Parse `app`'s PRIVATE_BASE_URL_ALLOWLIST and keep it in `app.extensions`.

    :raise ValueError: an entry is neither a host name nor a network (names the entry).
    """
    source = app.config["PRIVATE_BASE_URL_ALLOWLIST"] or ""
    parsed = ParsedAllowlist(source, parse_allowlist(source))
    app.extensions[ALLOWLIST_EXTENSION] = parsed
    return parsed.allowlist


def current_allowlist() -> Allowlist:
    """The current app's parsed allowlist; parsed again only when the setting changed since (tests
    change it at run time)."""
    cached: ParsedAllowlist | None = current_app.extensions.get(ALLOWLIST_EXTENSION)
    if cached is not None and cached.source == (current_app.config["PRIVATE_BASE_URL_ALLOWLIST"] or ""):
        return cached.allowlist
    return load_allowlist(current_app)
