"""The SSRF guard: which URLs and addresses LeadFlow's outbound calls may reach.

A tenant chooses where pool C posts its leads, so without a guard a webhook URL is a door into
LeadFlow's own network (the cloud's metadata service, Redis, an internal admin). Every outbound
call (tenants' CRM webhooks, the AI provider) is held to these rules:
- https only, unless LEADFLOW_OUTBOUND_ALLOW_HTTP (dev: `make run`, the tests' live stack);
- no user:password@ in the URL (credentials travel in headers a receiver controls, not in URLs
  that end up in logs and admin pages);
- every address the host resolves to is public: not loopback, private (RFC 1918, ULA),
  link-local (169.254/16 where cloud metadata lives, fe80::/10), multicast, unspecified,
  shared (100.64/10) or otherwise reserved, IPv4 inside IPv6 (::ffff:a.b.c.d, 6to4, NAT64)
  judged as the IPv4 address it carries;
- unless LEADFLOW_OUTBOUND_ALLOWED_HOSTS names the URL's host exactly (an internal CRM).
leadflow/outbound.py applies them at send time, where the name is resolved once and the
connection made to the address checked (so a name that re-resolves elsewhere, DNS rebinding,
reaches nothing new), and refuses redirects. Tenants' URLs are also checked when saved.

Import-light (no Django models, no httpx): the settings (leadflow/settings/pipeline.py) check
the AI provider URL with it.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.0.0.0 to itself
_NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE_NETWORK = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d

_RULE_TEXT = {
    "loopback": "a loopback address",
    "private": "a private address (RFC 1918 / ULA)",
    "link-local": "a link-local address (where cloud metadata services answer)",
    "multicast": "a multicast address",
    "unspecified": "an unspecified address (it reaches this machine)",
    "shared": "a shared address (100.64.0.0/10, carrier-grade NAT)",
    "reserved": "a reserved, non-public address",
}
ALLOWLIST_HINT = "name the host in LEADFLOW_OUTBOUND_ALLOWED_HOSTS if it is yours"


class OutboundRefused(Exception):
    """A URL or address the guard refuses; `rule` names the rule (e.g. "loopback")."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"refused by the SSRF guard (rule: {rule}): {detail}")
        self.rule = rule


@dataclass(frozen=True)
class OutboundPolicy:
    allow_http: bool
    allowed_hosts: frozenset[str]  # URL hosts as written, lower-case, no trailing dot

    @classmethod
    def current(cls) -> "OutboundPolicy":
        """The policy in Django's settings, read at each call (tests may change them)."""
        from django.conf import settings

        return cls(
            allow_http=settings.OUTBOUND_ALLOW_HTTP,
            allowed_hosts=frozenset(host_normalized(h) for h in settings.OUTBOUND_ALLOWED_HOSTS),
        )

    def host_allowed(self, host: str) -> bool:
        return host_normalized(host) in self.allowed_hosts


def allowed_hosts_parse(raw: str) -> list[str]:
    """LEADFLOW_OUTBOUND_ALLOWED_HOSTS: comma-separated hosts, as written in URLs."""
    return sorted({host_normalized(host) for host in raw.split(",") if host.strip()})


def host_normalized(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def address_rule(address: IPAddress) -> str | None:
    """The rule that refuses this address, or None when it is a public unicast address."""
    if address.version == 6:
        if address.is_loopback:
            return "loopback"
        if address.is_unspecified:
            return "unspecified"
        embedded = _ipv4_embedded(address)
        if embedded is not None:
            return address_rule(embedded)
        if address.is_site_local:  # fec0::/10, deprecated, still routed inside some networks
            return "private"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address in _SHARED_NETWORK:
        return "shared"
    if address.is_multicast:
        return "multicast"
    if any(address in network for network in _PRIVATE_NETWORKS):
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def _ipv4_embedded(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # An IPv6 address that carries an IPv4 one reaches that IPv4 address (the kernel for
    # ::ffff:a.b.c.d, a relay or gateway for 6to4 and NAT64): it is judged as that address.
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_NETWORK or address in _IPV4_COMPATIBLE_NETWORK:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_check(address: str, host: str) -> None:
    """Raise OutboundRefused if the address (a resolved or connected peer) is not public."""
    parsed = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    rule = address_rule(parsed)
    if rule is not None:
        named = "" if host_normalized(host) == str(parsed) else f" (from {host!r})"
        raise OutboundRefused(rule, f"{parsed}{named} is {_RULE_TEXT[rule]}; {ALLOWLIST_HINT}")


def addresses_resolved(host: str, port: int, *, numeric_only: bool = False) -> list[str]:
    """The host's addresses, resolved once (socket.gaierror if it does not resolve).

    numeric_only: no DNS query, only what the host spells itself (127.1, 2130706433, ::1).
    """
    flags = socket.AI_NUMERICHOST if numeric_only else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses


def host_addresses_checked(host: str, port: int) -> list[str]:
    """Resolve the host once and return its addresses, all public, to connect to; raise
    OutboundRefused if any is not (a name with one internal address is not trusted for the
    others). socket.gaierror if it does not resolve."""
    addresses = addresses_resolved(host, port)
    for address in addresses:
        address_check(address, host)
    return addresses


def url_check(url: str, policy: OutboundPolicy, *, resolve: str = "dns") -> None:
    """Raise OutboundRefused if the URL breaks a rule.

    resolve: "dns" resolves the host and checks every address (at save time); "numeric" only
    checks what the host spells without a DNS query (at start); "none" checks the URL's form
    alone (at send time, where the connection checks the address it connects to). A host
    that does not resolve passes: it reaches nothing, and the send checks it again.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused("url", f"{url!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise OutboundRefused("scheme", f"{scheme or 'no'} scheme: only https is called")
    if scheme == "http" and not policy.allow_http:
        raise OutboundRefused(
            "https-only", "http is not allowed outside dev (LEADFLOW_OUTBOUND_ALLOW_HTTP)"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise OutboundRefused(
            "credentials", "user:password@ in the URL is not allowed; send credentials in headers"
        )
    host = parts.hostname or ""
    if not host:
        raise OutboundRefused("url", f"{url!r} has no host")
    if policy.host_allowed(host) or resolve == "none":
        return
    if host_normalized(host) == "localhost" or host_normalized(host).endswith(".localhost"):
        # RFC 6761: always loopback, whatever a resolver says.
        raise OutboundRefused("loopback", f"{host!r} is {_RULE_TEXT['loopback']}; {ALLOWLIST_HINT}")
    try:  # an IP literal, a zone included (fe80::1%eth0), which a resolver may not take
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        address_check(str(literal), host)
        return
    try:
        addresses = addresses_resolved(
            host, port or (443 if scheme == "https" else 80), numeric_only=resolve == "numeric"
        )
    except (socket.gaierror, UnicodeError):
        return
    for address in addresses:
        address_check(address, host)
