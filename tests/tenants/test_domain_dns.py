"""The TXT lookup behind "Check DNS now", against a DNS server started in the test (no internet)."""

import time

import dns.rcode
import pytest

from apps.tenants import domain_dns
from apps.tenants.domain_dns import TxtCheck, txt_check

DOMAIN, TOKEN = "alpha.test", "tok-3f9a_Zq"
NAME = "_ephemera-challenge.alpha.test"
VALUE = "ephemera-verification=tok-3f9a_Zq"


def check() -> TxtCheck:
    return txt_check(domain_name=DOMAIN, token=TOKEN)


def test_the_record_to_publish():
    assert domain_dns.challenge_name(DOMAIN) == NAME
    assert domain_dns.challenge_value(TOKEN) == VALUE


def test_found(dns_server):
    dns_server.txt(NAME, VALUE)

    assert check() == TxtCheck.FOUND
    assert dns_server.zone.queries == [("udp", NAME, "TXT")]


def test_no_such_name_is_no_record(dns_server):
    dns_server.txt(DOMAIN, VALUE)  # at the apex, not where Ephemera looks

    assert check() == TxtCheck.MISSING
    assert check() == "no TXT record"
    assert ("udp", NAME, "TXT") in dns_server.zone.queries


def test_a_name_without_txt_is_no_record(dns_server):
    dns_server.a(NAME, "192.0.2.1")  # NOERROR with an empty answer: dnspython's NoAnswer

    assert check() == TxtCheck.MISSING


def test_wrong_value(dns_server):
    dns_server.txt(NAME, "ephemera-verification=someone-elses-token")

    assert check() == TxtCheck.MISMATCH
    assert check() == "TXT present but the value does not match"


def test_a_value_that_only_starts_right_does_not_match(dns_server):
    dns_server.txt(NAME, VALUE + "x", "x" + VALUE)

    assert check() == TxtCheck.MISMATCH


def test_a_record_split_into_several_strings_is_joined(dns_server):
    dns_server.txt(NAME, ("ephemera-verification=", "tok-3f9a", "_Zq"))

    assert domain_dns.txt_values(NAME) == [VALUE]
    assert check() == TxtCheck.FOUND


def test_one_matching_record_among_several(dns_server):
    dns_server.txt(NAME, "v=spf1 -all", "ephemera-verification=stale-token", VALUE)

    assert check() == TxtCheck.FOUND


def test_servfail_is_no_answer(dns_server):
    dns_server.fail(NAME, dns.rcode.SERVFAIL)

    assert check() == TxtCheck.NO_ANSWER
    assert check() == "DNS did not answer"


def test_a_server_that_never_answers_times_out_quickly(dns_server, monkeypatch):
    monkeypatch.setattr(domain_dns, "TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(domain_dns, "LIFETIME_SECONDS", 0.5)
    dns_server.txt(NAME, VALUE)
    dns_server.zone.silent = True

    started = time.monotonic()
    result = check()

    assert result == TxtCheck.NO_ANSWER
    assert time.monotonic() - started < 2
    assert dns_server.zone.queries  # it did ask


def test_a_truncated_udp_answer_is_retried_over_tcp(dns_server):
    dns_server.txt(NAME, VALUE)
    dns_server.zone.truncate_udp = True

    assert check() == TxtCheck.FOUND
    assert [transport for transport, *_ in dns_server.zone.queries] == ["udp", "tcp"]


def test_nothing_listening_is_no_answer(settings, monkeypatch):
    monkeypatch.setattr(domain_dns, "LIFETIME_SECONDS", 0.5)
    settings.DNS_RESOLVER_NAMESERVERS = ["127.0.0.1:9"]  # discard: nobody answers there

    assert check() == TxtCheck.NO_ANSWER


def test_a_misconfigured_nameserver_is_no_answer_not_a_crash(settings):
    settings.DNS_RESOLVER_NAMESERVERS = ["127.0.0.1:not-a-port"]

    assert check() == TxtCheck.NO_ANSWER


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["127.0.0.1"], [("127.0.0.1", 53)]),
        (["127.0.0.1:5353", "[::1]:5300"], [("127.0.0.1", 5353), ("::1", 5300)]),
        (["::1"], [("::1", 53)]),
    ],
)
def test_the_setting_names_servers_and_ports(settings, entries, expected):
    settings.DNS_RESOLVER_NAMESERVERS = entries

    resolver = domain_dns.resolver()

    assert [(ns.address, ns.port) for ns in resolver.nameservers] == expected
    assert (resolver.timeout, resolver.lifetime) == (2.0, 3.0)


def test_a_host_name_in_the_setting_is_resolved(settings):
    settings.DNS_RESOLVER_NAMESERVERS = ["localhost:5353"]

    (nameserver,) = domain_dns.resolver().nameservers

    assert (nameserver.address in ("127.0.0.1", "::1"), nameserver.port) == (True, 5353)
