import pytest

from tests.dns_server import LocalDnsServer


@pytest.fixture
def dns_server(settings):
    """A local DNS server the portal's resolver is pointed at (DNS_RESOLVER_NAMESERVERS)."""
    with LocalDnsServer() as server:
        settings.DNS_RESOLVER_NAMESERVERS = [f"127.0.0.1:{server.port}"]
        yield server
