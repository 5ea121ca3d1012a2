"""The DNS half of domain verification: look up a claim's TXT record (docs/architecture.md,
"Tenancy"; docs/adr/0016-domain-verification-by-dns.md).

An organisation proves it controls a claimed domain by publishing
``ephemera-verification=<token>`` as a TXT record at ``_ephemera-challenge.<domain>``. This
module only answers "is that record there?"; recording the answer and deciding what it means
are the services' (``domain_check_dns``) and the operator's.
"""

import socket
from enum import StrEnum

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from django.conf import settings

CHALLENGE_LABEL = "_ephemera-challenge"
VALUE_PREFIX = "ephemera-verification="

# One query may wait TIMEOUT_SECONDS for a server; the whole lookup, retries included, at most
# LIFETIME_SECONDS. It runs inside a web request, so it must give up quickly.
TIMEOUT_SECONDS = 2.0
LIFETIME_SECONDS = 3.0


class TxtCheck(StrEnum):
    """What one lookup found; the value is what the organisation and the operator read."""

    FOUND = "found"
    MISSING = "no TXT record"
    MISMATCH = "TXT present but the value does not match"
    NO_ANSWER = "DNS did not answer"


def challenge_name(domain_name: str) -> str:
    """Where the record lives: its own name, so it sits apart from the apex's SPF and others."""
    return f"{CHALLENGE_LABEL}.{domain_name}"


def challenge_value(token: str) -> str:
    return f"{VALUE_PREFIX}{token}"


def _nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; a host name is resolved."""
    host, port = entry, 53
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = int(rest.removeprefix(":") or 53)
    elif entry.count(":") == 1:
        host, _, raw_port = entry.partition(":")
        port = int(raw_port)
    address = socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)[0][4][0]
    return dns.nameserver.Do53Nameserver(address, port)


def resolver() -> dns.resolver.Resolver:
    """A fresh resolver (no cache: a check must see the record as published now).

    ``DNS_RESOLVER_NAMESERVERS`` is read here and nowhere else: empty means the system's
    resolver configuration.
    """
    configured = list(settings.DNS_RESOLVER_NAMESERVERS)
    if configured:
        result = dns.resolver.Resolver(configure=False)
        result.nameservers = [_nameserver(entry) for entry in configured]
    else:
        result = dns.resolver.Resolver()
    result.timeout = TIMEOUT_SECONDS
    result.lifetime = LIFETIME_SECONDS
    return result


def txt_values(name: str) -> list[str]:
    """Every TXT record at ``name``, each one's strings joined as RFC 7208 §3.3 says.

    Raises dnspython's exceptions: NXDOMAIN and NoAnswer when there is no record, others when
    DNS gave no usable answer.
    """
    answer = resolver().resolve(dns.name.from_text(name), dns.rdatatype.TXT, search=False)
    return [
        b"".join(record.strings).decode("utf-8", errors="replace")
        for record in answer
        if record.rdtype == dns.rdatatype.TXT
    ]


def txt_check(*, domain_name: str, token: str) -> TxtCheck:
    """Whether ``_ephemera-challenge.<domain>`` holds exactly ``ephemera-verification=<token>``."""
    expected = challenge_value(token)
    try:
        values = txt_values(challenge_name(domain_name))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return TxtCheck.MISSING
    except (dns.exception.DNSException, OSError, ValueError):
        # Timeouts, SERVFAIL/REFUSED from every server (NoNameservers), no resolver
        # configuration, a malformed reply, an unreachable or misconfigured nameserver.
        return TxtCheck.NO_ANSWER
    if not values:
        return TxtCheck.MISSING
    if any(value.strip() == expected for value in values):
        return TxtCheck.FOUND
    return TxtCheck.MISMATCH
