"""The provider base-URL policy (SPEC section 4): normalisation and SSRF refusal.

Unit tests of app.services.base_urls (no app, no database, no network), and at the end the one
rule a user meets through the API and the admin form: a base URL with a query string is refused.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.errors import InvalidInput
from app.services.base_urls import (
    ALWAYS_BLOCKED_NETWORKS,
    BACKSLASH,
    BAD_HOST,
    BAD_PORT,
    CONTROL,
    FRAGMENT,
    INVALID_BASE_URL,
    METADATA,
    NON_ASCII_HOST,
    NOT_ABSOLUTE,
    PERCENT_HOST,
    PRIVATE,
    PRIVATE_NETWORKS,
    QUERY,
    SCHEME,
    TOO_LONG,
    USERINFO,
    is_blocked_ip,
    normalize_base_url,
    parse_allowlist,
)

ALLOW_LOCAL = "localhost,10.0.0.0/8"
ALLOW_EVERYTHING = "0.0.0.0/0,::/0,localhost,metadata,metadata.google.internal,instance-data"
QUERY_DETAIL = "Remove the query string: put keys in the key field, not in the URL."


def refusal(url: str, allowlist: str = "") -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        normalize_base_url(url, allowlist)
    error = caught.value
    assert error.message == INVALID_BASE_URL
    assert error.field == "base_url"
    return error


HOSTILE = [
    # Cloud metadata and link-local, in every spelling.
    ("http://169.254.169.254", METADATA),
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", METADATA),
    ("http://169.254.169.254:80/computeMetadata/v1/", METADATA),
    ("http://2852039166", METADATA),
    ("http://0xa9fea9fe", METADATA),
    ("http://0XA9FEA9FE/", METADATA),
    ("http://0251.0376.0251.0376", METADATA),
    ("http://0xa9.0xfe.0xa9.0xfe", METADATA),
    ("http://169.254.43518", METADATA),
    ("http://169.16689662", METADATA),
    ("http://169.254.169.254.", METADATA),
    ("http://[::ffff:169.254.169.254]", METADATA),
    ("http://[::ffff:a9fe:a9fe]", METADATA),
    ("http://[0:0:0:0:0:ffff:a9fe:a9fe]", METADATA),
    ("http://[64:ff9b::169.254.169.254]", METADATA),
    ("http://[2002:a9fe:a9fe::1]", METADATA),
    ("http://[::169.254.169.254]", METADATA),
    ("http://[fd00:ec2::254]/latest/meta-data/", METADATA),
    ("http://[FD00:EC2:0:0:0:0:0:254]", METADATA),
    ("http://[fe80::1]", METADATA),
    ("http://[fe80::a9fe:a9fe]:8080", METADATA),
    ("http://169.254.170.2/v2/credentials", METADATA),
    ("http://metadata.google.internal/computeMetadata/v1/", METADATA),
    ("http://METADATA.GOOGLE.INTERNAL./", METADATA),
    ("http://metadata/computeMetadata/v1/", METADATA),
    ("http://metadata.goog", METADATA),
    ("http://instance-data/latest/meta-data/", METADATA),
    ("http://100.100.100.200/latest/meta-data/", METADATA),
    ("http://168.63.129.16/machine", METADATA),
    # Loopback, in every spelling.
    ("http://127.0.0.1", PRIVATE),
    ("http://127.0.0.1:11434/v1", PRIVATE),
    ("http://127.0.0.1.:80", PRIVATE),
    ("http://2130706433", PRIVATE),
    ("http://0x7f000001", PRIVATE),
    ("http://0x7F.0.0.1", PRIVATE),
    ("http://0177.0.0.1", PRIVATE),
    ("http://0177.0000.0000.0001", PRIVATE),
    ("http://00000177.0.0.1", PRIVATE),
    ("http://127.1", PRIVATE),
    ("http://127.0.1", PRIVATE),
    ("http://127.255.255.254", PRIVATE),
    ("http://0", PRIVATE),
    ("http://0x", PRIVATE),
    ("http://0.0.0.0:5000", PRIVATE),
    ("http://[::1]", PRIVATE),
    ("http://[::1]:11434/v1", PRIVATE),
    ("http://[0:0:0:0:0:0:0:1]", PRIVATE),
    ("http://[::]", PRIVATE),
    ("http://[::ffff:127.0.0.1]", PRIVATE),
    ("http://[::ffff:7f00:1]", PRIVATE),
    ("http://[::127.0.0.1]", PRIVATE),
    ("http://[64:ff9b::7f00:1]", PRIVATE),
    ("http://[2002:7f00:1::]", PRIVATE),
    ("http://localhost", PRIVATE),
    ("http://localhost.", PRIVATE),
    ("http://LocalHost:8080/v1", PRIVATE),
    ("http://api.localhost", PRIVATE),
    ("http://evil.localhost./v1", PRIVATE),
    # Private, CGNAT, reserved, multicast, broadcast, documentation, ULA.
    ("http://10.0.0.1", PRIVATE),
    ("https://10.255.255.255:8443/v1", PRIVATE),
    ("http://167772161", PRIVATE),
    ("http://172.16.0.1", PRIVATE),
    ("http://172.31.255.255", PRIVATE),
    ("http://192.168.1.1", PRIVATE),
    ("http://3232235777", PRIVATE),
    ("http://0xc0a80101", PRIVATE),
    ("http://192.168.257", PRIVATE),
    ("http://100.64.0.1", PRIVATE),
    ("http://100.127.255.254", PRIVATE),
    ("http://192.0.0.8", PRIVATE),
    ("http://192.0.2.1", PRIVATE),
    ("http://198.18.0.1", PRIVATE),
    ("http://198.51.100.7", PRIVATE),
    ("http://203.0.113.9", PRIVATE),
    ("http://224.0.0.1", PRIVATE),
    ("http://239.255.255.250:1900", PRIVATE),
    ("http://240.0.0.1", PRIVATE),
    ("http://255.255.255.255", PRIVATE),
    ("http://[fc00::1]", PRIVATE),
    ("http://[fd12:3456:789a::1]", PRIVATE),
    ("http://[fec0::1]", PRIVATE),
    ("http://[ff02::1]", PRIVATE),
    ("http://[2001:db8::1]", PRIVATE),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]", PRIVATE),
    ("http://[100::1]", PRIVATE),
    ("http://[::ffff:10.0.0.1]", PRIVATE),
    ("http://[::ffff:c0a8:101]", PRIVATE),
    ("http://[64:ff9b::10.0.0.1]", PRIVATE),
    ("http://[64:ff9b:1::a00:1]", PRIVATE),
    ("http://[2002:c0a8:101::1]", PRIVATE),
    ("http://router.local", PRIVATE),
    ("http://db.internal:5432", PRIVATE),
    ("http://printer.home.arpa", PRIVATE),
    # User info.
    ("http://user:pass@api.openai.com", USERINFO),
    ("https://user@api.openai.com/v1", USERINFO),
    ("http://api.openai.com@127.0.0.1", USERINFO),
    ("http://@api.openai.com", USERINFO),
    ("http://api.openai.com:443@169.254.169.254/", USERINFO),
    # Backslashes, which browsers read as "/".
    ("http://api.openai.com\\@127.0.0.1", BACKSLASH),
    ("http:\\\\127.0.0.1", BACKSLASH),
    ("http://127.0.0.1\\.api.openai.com", BACKSLASH),
    ("https://api.openai.com\\v1", BACKSLASH),
    # Whitespace and control characters, raw or percent-encoded.
    ("http://api.open\nai.com", CONTROL),
    ("http://api.openai.com/v 1", CONTROL),
    ("http://api.openai.com\t/v1", CONTROL),
    ("http://api.openai.com/\x00", CONTROL),
    ("http://api.openai.com/\x7f", CONTROL),
    ("http://api.openai.com/v1\r\nX-Injected: 1", CONTROL),
    ("http://api.openai.com/v1%0d%0aX-Injected:%201", CONTROL),
    ("http://127.0.0.1%00.api.openai.com", CONTROL),
    ("http://api.openai.com%09/v1", CONTROL),
    ("http://api.openai.com\u200b/v1", CONTROL),
    ("http://api.openai.com\u00a0/v1", CONTROL),
    ("http://api.openai.com/\u202ev1", CONTROL),
    # Fragments.
    ("https://api.openai.com/v1#frag", FRAGMENT),
    ("https://api.openai.com#@127.0.0.1", FRAGMENT),
    # A query string: a key put there would be shown wherever the base URL is.
    ("https://gw.example.com/v1?api-key=not-a-real-key", QUERY),
    ("https://gw.example.com?key=abc", QUERY),
    ("https://gw.example.com:8443/v1/?a=1&b=2", QUERY),
    ("https://res.openai.azure.com/openai?api-version=2024-10-21", QUERY),
    ("https://res.openai.azure.com/openai/?api-version=2024-10-21", QUERY),
    ("https://openrouter.ai/api/v1?", QUERY),
    ("https://gw.example.com?", QUERY),
    # Other schemes and relative URLs.
    ("ftp://api.openai.com", SCHEME),
    ("file:///etc/passwd", SCHEME),
    ("gopher://127.0.0.1:6379/_INFO", SCHEME),
    ("dict://127.0.0.1:11211/", SCHEME),
    ("javascript:alert(1)", SCHEME),
    ("data:text/plain,hello", SCHEME),
    ("ws://api.openai.com/v1", SCHEME),
    ("localhost:11434", SCHEME),
    ("api.openai.com/v1", NOT_ABSOLUTE),
    ("//api.openai.com/v1", NOT_ABSOLUTE),
    ("http:/api.openai.com", NOT_ABSOLUTE),
    ("http:api.openai.com", NOT_ABSOLUTE),
    ("http:///127.0.0.1", NOT_ABSOLUTE),
    ("https://", NOT_ABSOLUTE),
    ("https://:443/v1", NOT_ABSOLUTE),
    # Encoded, unicode and malformed hosts.
    ("http://%31%32%37.0.0.1", PERCENT_HOST),
    ("http://%6c%6f%63%61%6c%68%6f%73%74", PERCENT_HOST),
    ("http://[fe80::1%25eth0]", PERCENT_HOST),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11", NON_ASCII_HOST),
    ("http://127\u30020\u30020\u30021", NON_ASCII_HOST),
    ("http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3", NON_ASCII_HOST),
    ("http://ex\u0430mple.com", NON_ASCII_HOST),
    ("http://::1/", BAD_HOST),
    ("http://[::1", BAD_HOST),
    ("http://[::1]x", BAD_HOST),
    ("http://[127.0.0.1]", BAD_HOST),
    ("http://[::ffff:0177.0.0.1]", BAD_HOST),
    ("http://1.2.3.4.5", BAD_HOST),
    ("http://256.0.0.1", BAD_HOST),
    ("http://08.0.0.1", BAD_HOST),
    ("http://4294967296", BAD_HOST),
    ("http://1.2.65536", BAD_HOST),
    ("http://example.123", BAD_HOST),
    ("http://-bad-.example.com", BAD_HOST),
    ("http://a..b.com", BAD_HOST),
    ("http://*.example.com", BAD_HOST),
    # Ports.
    ("http://api.openai.com:0", BAD_PORT),
    ("http://api.openai.com:65536", BAD_PORT),
    ("http://api.openai.com:-1", BAD_PORT),
    ("http://api.openai.com:80a", BAD_PORT),
    ("http://api.openai.com:", BAD_PORT),
    ("http://api.openai.com:\uff18\uff10", BAD_PORT),
    # Over-long.
    ("https://api.openai.com/" + "a" * 2026, TOO_LONG),
]


def test_the_hostile_table_is_large_and_unique():
    urls = [url for url, _ in HOSTILE]
    assert len(urls) >= 60
    assert len(set(urls)) == len(urls)


@pytest.mark.parametrize(("url", "detail"), HOSTILE)
def test_hostile_urls_are_refused_with_a_reason(url, detail):
    error = refusal(url)
    assert error.detail == detail
    assert error.to_dict() == {"message": "Invalid provider base URL.", "detail": detail}


@pytest.mark.parametrize(("url", "detail"), [(u, d) for u, d in HOSTILE if d == METADATA])
def test_metadata_and_link_local_stay_refused_whatever_the_allowlist(url, detail):
    assert refusal(url, ALLOW_EVERYTHING).detail == METADATA
    assert refusal(url, "169.254.0.0/16,fe80::/10,fd00:ec2::254,100.100.100.200,168.63.129.16").detail == METADATA


@pytest.mark.parametrize(("raw", "expected"), [
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("https://API.OpenAI.com/v1/", "https://api.openai.com/v1"),
    ("HTTPS://api.anthropic.com", "https://api.anthropic.com"),
    ("  https://api.anthropic.com/v1//  ", "https://api.anthropic.com/v1"),
    ("https://api.openai.com:443/v1", "https://api.openai.com:443/v1"),
    ("https://api.openai.com:0443/v1", "https://api.openai.com:443/v1"),
    ("https://res.openai.azure.com/openai", "https://res.openai.azure.com/openai"),
    ("https://gw.example.com/v1%3Fkey=1", "https://gw.example.com/v1%3Fkey=1"),  # an encoded "?" is path
    ("https://api.openai.com./v1", "https://api.openai.com/v1"),
    ("https://gateway.ai.example.com/My/Path", "https://gateway.ai.example.com/My/Path"),
    ("https://xn--bcher-kva.example/v1", "https://xn--bcher-kva.example/v1"),
    ("http://8.8.8.8:8000/v1", "http://8.8.8.8:8000/v1"),
    ("http://134744072/v1", "http://8.8.8.8/v1"),
    ("http://0x08080808", "http://8.8.8.8"),
    ("https://[2606:4700:4700:0:0:0:0:1111]/v1", "https://[2606:4700:4700::1111]/v1"),
    ("https://[::ffff:8.8.8.8]", "https://[::ffff:8.8.8.8]"),
    ("http://[64:ff9b::8.8.8.8]", "http://[64:ff9b::808:808]"),
    ("http://169.255.0.1", "http://169.255.0.1"),
    ("http://100.128.0.1", "http://100.128.0.1"),
    ("http://172.32.0.1", "http://172.32.0.1"),
    ("http://localhost.example.com", "http://localhost.example.com"),
    ("https://api.openai.com/v1%20beta", "https://api.openai.com/v1%20beta"),
    ("", ""),
    ("   ", ""),
    (None, ""),
])
def test_public_urls_are_accepted_and_normalised(raw, expected):
    assert normalize_base_url(raw) == expected


def test_the_query_detail_says_where_keys_go():
    assert refusal("https://gw.example.com/v1?api-key=abc").to_dict() == {
        "message": "Invalid provider base URL.", "detail": QUERY_DETAIL}


@pytest.mark.parametrize(("raw", "expected"), [
    ("https://API.example.com/v1/models?limit=1", "https://api.example.com/v1/models?limit=1"),
    ("https://res.openai.azure.com/openai/models?api-version=2024-10-21",
     "https://res.openai.azure.com/openai/models?api-version=2024-10-21"),
    ("https://gw.example.com/v1/models?", "https://gw.example.com/v1/models"),
])
def test_request_urls_of_the_outbound_client_keep_their_query(raw, expected):
    """The outbound client checks a call's full URL (its own query included) against the policy."""
    assert normalize_base_url(raw, allow_query=True) == expected
    assert refusal(raw).detail == QUERY


def test_the_length_limit_is_2048_characters():
    exact = "https://api.openai.com/" + "a" * (2048 - len("https://api.openai.com/"))
    assert len(exact) == 2048
    assert normalize_base_url(exact) == exact
    assert refusal(exact + "a").detail == TOO_LONG


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://localhost:11434/v1", "http://localhost:11434/v1"),
    ("http://LOCALHOST.:11434/v1/", "http://localhost:11434/v1"),
    ("http://10.1.2.3:8000", "http://10.1.2.3:8000"),
    ("http://012.1.2.3:8000", "http://10.1.2.3:8000"),
    ("http://[::ffff:10.1.2.3]:8000", "http://[::ffff:10.1.2.3]:8000"),
])
def test_allow_listed_private_hosts_are_accepted(raw, expected):
    assert normalize_base_url(raw, ALLOW_LOCAL) == expected


@pytest.mark.parametrize(("url", "allowlist"), [
    ("http://127.0.0.1:11434", "localhost"),           # a name entry matches that name only
    ("http://api.localhost", "localhost"),
    ("http://localhost.localdomain", "localhost"),
    ("http://192.168.1.1", "10.0.0.0/8"),
    ("http://172.16.0.1", "10.0.0.0/8,localhost"),
    ("http://[fd00::1]", "10.0.0.0/8"),
    ("http://10.1.2.3", "10.1.2.4"),
    ("http://[::1]", "127.0.0.0/8"),                   # IPv6 loopback is not in an IPv4 network
])
def test_the_allowlist_admits_only_what_it_names(url, allowlist):
    assert refusal(url, allowlist).detail == PRIVATE


def test_allow_listed_networks_and_hosts():
    assert normalize_base_url("http://[::1]:8080", "::1") == "http://[::1]:8080"
    assert normalize_base_url("http://[fd00::5]/v1", "fd00::/8") == "http://[fd00::5]/v1"
    assert normalize_base_url("http://llm.corp.internal/v1", "llm.corp.internal") == "http://llm.corp.internal/v1"
    assert normalize_base_url("http://192.168.1.20", " 192.168.1.0/24 , , localhost ") == "http://192.168.1.20"


def test_169_254_169_254_stays_refused_even_if_allow_listed():
    assert refusal("http://169.254.169.254/latest/meta-data/", "169.254.169.254,169.254.0.0/16").detail == METADATA
    assert refusal("http://metadata.google.internal", "metadata.google.internal").detail == METADATA


def test_parse_allowlist_reads_hosts_and_networks():
    allowlist = parse_allowlist(" LocalHost. , 10.0.0.0/8, fd00::/8 ,[::1], 192.168.1.7, ollama ")
    assert allowlist.hosts == frozenset({"localhost", "ollama"})
    assert ipaddress.ip_network("10.0.0.0/8") in allowlist.networks
    assert ipaddress.ip_network("192.168.1.7/32") in allowlist.networks
    assert ipaddress.ip_network("fd00::/8") in allowlist.networks
    assert ipaddress.ip_network("::1/128") in allowlist.networks
    assert parse_allowlist("") == parse_allowlist(None) == parse_allowlist(" , ")


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "local host", "http://localhost", "localhost:11434", "1.2.3.4.5"])
def test_parse_allowlist_refuses_malformed_entries(raw):
    with pytest.raises(ValueError, match="PRIVATE_BASE_URL_ALLOWLIST"):
        parse_allowlist(raw)


def test_the_app_refuses_to_start_with_a_malformed_allowlist():
    from app import create_app
    from app.config import ConfigError
    from tests.conftest import base_config

    with pytest.raises(ConfigError, match="PRIVATE_BASE_URL_ALLOWLIST"):
        create_app(base_config(PRIVATE_BASE_URL_ALLOWLIST="10.0.0.0/33"))


@pytest.mark.parametrize(("ip", "allowlist", "host", "blocked"), [
    ("8.8.8.8", "", "", False),
    ("2606:4700:4700::1111", "", "", False),
    ("127.0.0.1", "", "", True),
    ("127.0.0.1", "127.0.0.0/8", "", False),
    ("127.0.0.1", "localhost", "", True),
    ("127.0.0.1", "localhost", "localhost", False),   # an allow-listed name may resolve to loopback
    ("127.0.0.1", "localhost", "evil.example", True),
    ("10.1.2.3", "10.0.0.0/8", "", False),
    ("::ffff:10.1.2.3", "10.0.0.0/8", "", False),
    ("::ffff:10.1.2.3", "", "", True),
    ("::1", "", "", True),
    ("fd00::1", "", "", True),
    ("100.64.1.1", "", "", True),
    ("169.254.169.254", ALLOW_EVERYTHING, "localhost", True),
    ("fd00:ec2::254", ALLOW_EVERYTHING, "localhost", True),
    ("fe80::1", ALLOW_EVERYTHING, "", True),
    ("64:ff9b::a9fe:a9fe", ALLOW_EVERYTHING, "", True),
])
def test_is_blocked_ip_for_resolved_addresses(ip, allowlist, host, blocked):
    assert is_blocked_ip(ip, allowlist, host=host) is blocked
    assert is_blocked_ip(ipaddress.ip_address(ip), parse_allowlist(allowlist), host=host) is blocked


# --- property: every address of every blocked network, in every spelling, is refused ----------

# Written out here rather than taken from the module, so that a range missing from its tables fails.
EXPECTED_METADATA = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32"]
EXPECTED_PRIVATE = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
    "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32", "::/128", "::1/128", "fc00::/7", "ff00::/8", "2001:db8::/32", "100::/64",
]
BLOCKED_NETWORKS = [(ipaddress.ip_network(n), METADATA) for n in EXPECTED_METADATA] + [
    (ipaddress.ip_network(n), PRIVATE) for n in EXPECTED_PRIVATE
]


def test_the_module_tables_cover_the_expected_networks():
    def covered(network, table):
        return any(network.version == t.version and network.subnet_of(t) for t in table)

    for network, detail in BLOCKED_NETWORKS:
        assert covered(network, ALWAYS_BLOCKED_NETWORKS if detail == METADATA else PRIVATE_NETWORKS), network


def ipv4_spellings(ip: ipaddress.IPv4Address) -> list[str]:
    """The same IPv4 address written every way inet_aton, browsers or IPv6 let you."""
    a, b, c, d = ip.packed
    n = int(ip)
    return [
        str(ip),
        f"{ip}.",                                   # trailing dot
        str(n),                                     # decimal integer
        hex(n),                                     # 0x hex integer
        hex(n).upper().replace("X", "x"),
        f"0{n:o}",                                  # octal integer
        f"0{a:o}.0{b:o}.0{c:o}.0{d:o}",             # dotted octal
        f"{a:#x}.{b:#x}.{c:#x}.{d:#x}",             # dotted hex
        f"{a}.{b}.{c * 256 + d}",                   # short: a.b.16-bit
        f"{a}.{b * 65536 + c * 256 + d}",           # short: a.24-bit
        f"{a:#x}.{b}.0{c:o}.{d}",                   # mixed hex, decimal and octal
        f"[::ffff:{ip}]",                           # IPv4-mapped IPv6, dotted
        f"[::ffff:{(n >> 16):x}:{(n & 0xFFFF):x}]",  # IPv4-mapped IPv6, hex
        f"[0:0:0:0:0:FFFF:{ip}]",
        f"[64:ff9b::{ip}]",                         # NAT64
        f"[2002:{(n >> 16):x}:{(n & 0xFFFF):x}::1]",  # 6to4
    ]


def ipv6_spellings(ip: ipaddress.IPv6Address) -> list[str]:
    return [f"[{ip.compressed}]", f"[{ip.exploded}]", f"[{ip.exploded.upper()}]"]


@st.composite
def blocked_addresses(draw):
    network, detail = draw(st.sampled_from(BLOCKED_NETWORKS))
    offset = draw(st.integers(min_value=0, max_value=network.num_addresses - 1))
    ip = network[offset]
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4-mapped addresses are spellings of IPv4 addresses, tested through those.
        assume(ip.ipv4_mapped is None)
        spellings = ipv6_spellings(ip)
    else:
        spellings = ipv4_spellings(ip)
    host = draw(st.sampled_from(spellings))
    port = draw(st.sampled_from(["", ":80", ":443", ":11434"]))
    path = draw(st.sampled_from(["", "/", "/v1", "/latest/meta-data/"]))
    scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
    return f"{scheme}://{host}{port}{path}", ip, detail


@settings(max_examples=300, deadline=None, derandomize=True)
@given(blocked_addresses())
def test_every_spelling_of_every_blocked_address_is_refused(case):
    url, ip, detail = case
    error = refusal(url)
    # A private network may contain a metadata address (100.100.100.200 is in CGNAT): stricter is right.
    assert error.detail in ({detail, METADATA}), f"{url} ({ip})"
    if detail == METADATA:
        assert refusal(url, ALLOW_EVERYTHING).detail == METADATA
    assert is_blocked_ip(ip) is True


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv4_spelling_agrees_with_the_dotted_form(n):
    """The parser reads decimal, hex, octal and short forms as the same address as the dotted form."""
    ip = ipaddress.IPv4Address(n)
    dotted = _outcome(f"http://{ip}")
    for spelling in ipv4_spellings(ip)[:11]:
        assert _outcome(f"http://{spelling}") == dotted, spelling


def _outcome(url: str) -> str:
    try:
        return normalize_base_url(url)
    except InvalidInput as error:
        return f"refused: {error.detail}"


# --- through the API and the admin form -------------------------------------------------------


def test_a_base_url_with_a_query_string_is_refused_by_the_api_and_the_form(app, client, admin, admin_api):
    from tests.support import login, post_form

    url = "https://gw.example.com/v1?api-key=not-a-real-key"
    response = admin_api.post("/ai-providers", json={"type": "openai", "name": "gateway", "base_url": url})
    assert response.status_code == 400
    assert response.get_json() == {"message": "Invalid provider base URL.", "detail": QUERY_DETAIL}
    created = admin_api.post("/ai-providers", json={"type": "azure", "name": "azure-eu",
                                                    "base_url": "https://res.openai.azure.com"})
    assert created.status_code == 201
    patched = admin_api.patch(f"/ai-providers/{created.get_json()['id']}",
                              json={"base_url": "https://res.openai.azure.com/openai?api-version=2024-10-21"})
    assert patched.status_code == 400
    assert patched.get_json()["detail"] == QUERY_DETAIL

    login(client, admin.email)
    page = post_form(client, "/admin/providers/new", {"type": "openai", "name": "gateway", "base_url": url,
                                                       "key_policy": "provider_only", "enabled": "y"})
    assert page.status_code == 400
    assert QUERY_DETAIL in page.get_data(as_text=True)
    assert [p["name"] for p in admin_api.get("/ai-providers").get_json()] == ["azure-eu"]
