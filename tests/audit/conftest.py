import pytest

from tests.conftest import TenantWorld, make_world


@pytest.fixture
def two_orgs(db) -> tuple[TenantWorld, TenantWorld]:
    """conftest's Alpha and Bravo, each with a sealed grant and a recorded task run."""
    return make_world("Alpha", with_audit_trail=True), make_world("Bravo", with_audit_trail=True)
