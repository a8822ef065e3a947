"""Where webhooks may go (services/notify/egress.py): every internal kind of address in
every spelling refused, the operator's allowed networks (with and without a port), URLs
read as the HTTP client reads them, and names checked through an injected resolver."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notify.egress import (
    AddressRefused,
    AllowedNetwork,
    EgressPolicy,
    LookupFailed,
    Resolver,
    TargetInvalid,
    address_kind,
    check_url,
    numeric_address,
    parse_allowed,
    parse_target,
)
from services.notify.settings import NotifySettings

INTERNAL = {
    "0.0.0.0": "unspecified",
    "0.1.2.3": "unspecified",
    "::": "unspecified",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "ff02::1": "multicast",
    "ff0e::1": "multicast",
    "10.0.0.1": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.1": "private",
    "fd00::1": "private",
    "fc00::1": "private",
    "fec0::1": "private",
    "100.64.0.1": "shared (carrier-grade NAT)",
    "100.127.255.254": "shared (carrier-grade NAT)",
    "198.18.0.1": "benchmarking",
    "198.19.255.254": "benchmarking",
    "2001:2::1": "benchmarking",
    "192.0.2.1": "documentation",
    "198.51.100.7": "documentation",
    "203.0.113.9": "documentation",
    "2001:db8::1": "documentation",
    "3fff::1": "documentation",
    "192.0.0.9": "protocol-assignment",
    "2001::1": "protocol-assignment",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "100::1": "reserved",
    "5f00::1": "reserved",
    "::7f00:1": "reserved",  # IPv4-compatible (deprecated)
    "::ffff:127.0.0.1": "IPv4-mapped loopback",
    "::ffff:10.0.0.1": "IPv4-mapped private",
    "::ffff:8.8.8.8": "IPv4-mapped",
    "64:ff9b::7f00:1": "NAT64 loopback",
    "64:ff9b::a9fe:a9fe": "NAT64 link-local",
    "64:ff9b:1::1": "local NAT64",
    "2002:7f00:1::": "6to4",
    "2002:808:808::": "6to4",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "kind"), sorted(INTERNAL.items()))
def test_internal_addresses_by_kind(address: str, kind: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is None
    assert EgressPolicy().refusal(ipaddress.ip_address(address), 443) is None


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("0:0:0:0:0:0:0:1", "::1"),
    ],
)
def test_numeric_spellings_read_as_the_system_reads_them(spelling: str, address: str) -> None:
    assert numeric_address(spelling) == ipaddress.ip_address(address)


@pytest.mark.parametrize("name", ["localhost", "example.com", "127.0.0.1.", "x.127.0.0.1"])
def test_names_are_not_numeric(name: str) -> None:
    assert numeric_address(name) is None


async def _nothing(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"no lookup expected for {host}")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8003/webhooks",
        "https://[::1]:8443/",
        "http://[::1]/",
        "http://0.0.0.0:4222/",
        "http://0/",
        "http://[::]/",
        "http://2130706433/",
        "http://127.1/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://10.0.0.5:5432/",
        "http://172.16.3.4/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",
        "http://198.18.0.1/",
        "http://192.0.2.1/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://[fd12:3456::1]/",
        "http://127。0。0。1/",  # ideographic full stops: IDNA makes them dots
        "HTTP://127.0.0.1:80/",
    ],
)
async def test_internal_urls_refused(url: str) -> None:
    with pytest.raises(AddressRefused) as err:
        await check_url(url, EgressPolicy(), _nothing)
    assert "公网" in err.value.reason  # English with Chinese alongside


@pytest.mark.parametrize(
    "url",
    [
        "http://evil@127.0.0.1/",
        "http://user:pass@8.8.8.8/",
        "http://8.8.8.8:8005@127.0.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://[fe80::1%25eth0]/",
        "http://127.0.0.1 /",
        "http://under_score.example/",
        "http://example.com:99999/",
        "http://example.com:0/",
        "ftp://8.8.8.8/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "http://",
        "http:/127.0.0.1/",
        "http:\\\\127.0.0.1/",
        "http://0177.0.0.1/",  # httpx refuses leading zeros in a dotted quad
        "http://ｌｏｃａｌｈｏｓｔ/",
    ],
)
async def test_unusable_urls_refused(url: str) -> None:
    with pytest.raises(TargetInvalid):
        await check_url(url, EgressPolicy(), _nothing)


def test_target_is_what_the_client_reads() -> None:
    target = parse_target("https://Bücher.Example:8443/hooks?x=1#frag")
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.example", 8443)
    assert target.display == "https://xn--bcher-kva.example:8443"
    assert parse_target("http://[::1]/").display == "http://[::1]"
    assert parse_target("https://example.com/").port == 443
    # The host is the one after the last '@' of the authority, as the client sends it.
    with pytest.raises(TargetInvalid):
        parse_target("http://127.0.0.1\\@example.com/")


def _resolver(answers: dict[str, list[str]], calls: list[str]) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        if host not in answers:
            raise LookupFailed("NXDOMAIN")
        return answers[host]

    return resolve


async def test_names_resolving_inside_refused_without_saying_where() -> None:
    calls: list[str] = []
    resolver = _resolver(
        {
            "hooks.example": ["93.184.216.34"],
            "db.example": ["10.1.2.3"],
            "mixed.example": ["93.184.216.34", "127.0.0.1"],
            "meta.example": ["169.254.169.254"],
            "v6.example": ["2606:4700::1111", "fd00::5"],
        },
        calls,
    )
    target = await check_url("https://hooks.example/in", EgressPolicy(), resolver)
    assert target.host == "hooks.example"
    for name, hidden in (
        ("db.example", "10.1.2.3"),
        ("mixed.example", "127.0.0.1"),
        ("meta.example", "169.254.169.254"),
        ("v6.example", "fd00::5"),
    ):
        with pytest.raises(AddressRefused) as err:
            await check_url(f"https://{name}/in", EgressPolicy(), resolver)
        assert name in err.value.reason and hidden not in err.value.reason
        assert hidden in err.value.detail  # the operator's log may say
    with pytest.raises(AddressRefused) as unknown:
        await check_url("https://nowhere.example/", EgressPolicy(), resolver)
    assert "解析" in unknown.value.reason
    # Whether a name exists inside is not told: the same words as for db.example.
    assert unknown.value.reason.replace("nowhere", "db") == err.value.reason.replace("v6", "db")
    assert calls.count("mixed.example") == 1  # looked up once


async def test_allowed_networks_with_and_without_a_port() -> None:
    sandbox = EgressPolicy(parse_allowed("127.0.0.1:8005"))
    await check_url("http://127.0.0.1:8005/hooks", sandbox, _nothing)
    await check_url("http://127.1:8005/hooks", sandbox, _nothing)  # the same address
    for url in (
        "http://127.0.0.1:8003/",  # notify itself
        "http://127.0.0.1/",
        "http://127.0.0.2:8005/",
        "http://0.0.0.0:8005/",  # reaches loopback, but is not the allowed address
        "http://[::ffff:127.0.0.1]:8005/",  # nor is its IPv6 spelling
        "http://[::1]:8005/",
    ):
        with pytest.raises(AddressRefused) as err:
            await check_url(url, sandbox, _nothing)
        assert "8005" not in err.value.reason  # the head is not told what is allowed
    network = EgressPolicy(parse_allowed("10.20.0.0/16, [fd00::/8]:443"))
    await check_url("http://10.20.3.4:9999/", network, _nothing)
    await check_url("https://[fd00::7]/", network, _nothing)
    with pytest.raises(AddressRefused):
        await check_url("http://[fd00::7]:80/", network, _nothing)
    with pytest.raises(AddressRefused):
        await check_url("http://10.21.0.1/", network, _nothing)


@pytest.mark.parametrize(
    ("text", "network", "port"),
    [
        ("127.0.0.1:8005", "127.0.0.1/32", 8005),
        ("127.0.0.1/32:8005", "127.0.0.1/32", 8005),
        ("10.20.0.0/16", "10.20.0.0/16", None),
        ("[::1]:8005", "::1/128", 8005),
        ("[fd00::/8]:443", "fd00::/8", 443),
        ("[fd00::/8]", "fd00::/8", None),
        ("fd00::/8", "fd00::/8", None),
        (" 192.168.5.0/24 ", "192.168.5.0/24", None),
    ],
)
def test_allowed_network_entries(text: str, network: str, port: int | None) -> None:
    entry = AllowedNetwork.parse(text)
    assert entry == AllowedNetwork(ipaddress.ip_network(network), port)
    assert AllowedNetwork.parse(str(entry)) == entry


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "127.0.0.1:http",
        "10.20.0.1/16",
        "example.com",
        "[::1",
        "[::1]8005",
        "::1:8005x",
    ],
)
def test_bad_allowed_network_entries(text: str) -> None:
    with pytest.raises(ValueError) as err:
        AllowedNetwork.parse(text)
    assert repr(text.strip()) in str(err.value)  # names the entry at fault


def test_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1:8005, 10.20.0.0/16")
    settings = NotifySettings()
    assert settings.egress_policy().allowed == (
        AllowedNetwork(ipaddress.ip_network("127.0.0.1/32"), 8005),
        AllowedNetwork(ipaddress.ip_network("10.20.0.0/16"), None),
    )
    monkeypatch.delenv("CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS")
    assert NotifySettings().egress_policy().allowed == ()  # nothing unless the operator says
    monkeypatch.setenv("CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1:70000")
    with pytest.raises(ValueError, match="65535"):
        NotifySettings()


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.builds("http://{}{}".format, st.text(max_size=30), st.text(max_size=10)),
        st.builds("https://[{}]/".format, st.text(alphabet="0123456789abcdef:.%", max_size=40)),
    )
)
def test_any_text_is_a_target_or_refused_in_words(url: str) -> None:
    try:
        target = parse_target(url)
    except TargetInvalid as err:
        assert str(err)
        return
    assert target.scheme in ("http", "https") and 1 <= target.port <= 65535
    assert not any(c in target.host for c in "@%/\\ \t") and target.host.isascii()
