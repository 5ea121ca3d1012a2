"""The library and the portal agree on the contract, and the library stands alone."""

import subprocess
import sys
import tomllib
from pathlib import Path

import ephemera_client
from ephemera_client import ERRORS_BY_CODE, EphemeraError

from apps.issuance.contract import ERROR_CODES

LIBRARY = Path(__file__).resolve().parents[2] / "clients" / "python"


def test_every_error_code_of_the_contract_has_its_class():
    """A code added to (or changed in) apps/issuance/contract.py fails here until the
    library learns it."""
    assert {code: (kind.http_status, kind.retryable) for code, kind in ERRORS_BY_CODE.items()} == {
        error.code: (error.status, error.retry) for error in ERROR_CODES
    }
    assert all(issubclass(kind, EphemeraError) for kind in ERRORS_BY_CODE.values())
    exported = {getattr(ephemera_client, kind.__name__) for kind in ERRORS_BY_CODE.values()}
    assert exported == set(ERRORS_BY_CODE.values())


def test_the_version_is_the_packaged_one():
    pyproject = tomllib.loads((LIBRARY / "pyproject.toml").read_text())
    assert ephemera_client.__version__ == pyproject["project"]["version"]


def test_the_library_imports_nothing_of_the_portal():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ephemera_client; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=LIBRARY,
    ).stdout.split()
    assert "httpx" in loaded
    assert not [name for name in loaded if name.split(".")[0] in ("apps", "portal", "django")]
