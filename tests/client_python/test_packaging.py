"""The library installs as its users install it: ``pip install ./clients/python`` into a
fresh virtual environment, needing nothing beyond httpx, typed (PEP 561)."""

import json
import subprocess
import sys
from pathlib import Path

import ephemera_client
from django.conf import settings

LIBRARY = Path(settings.BASE_DIR) / "clients" / "python"

REPORT = """
import importlib.metadata as metadata, json, pathlib, ephemera_client
print(json.dumps({
    "version": ephemera_client.__version__,
    "requires": metadata.requires("ephemera-client"),
    "typed": (pathlib.Path(ephemera_client.__file__).parent / "py.typed").is_file(),
    "exports": sorted(ephemera_client.__all__),
}))
"""


def test_pip_installs_it_from_the_repository_path_with_httpx_alone(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(  # noqa: S603 (fixed arguments)
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    install = subprocess.run(  # noqa: S603 (fixed arguments)
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", LIBRARY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr

    report = subprocess.run(  # noqa: S603 (fixed arguments)
        [str(python), "-c", REPORT], capture_output=True, text=True, timeout=60, check=True
    )
    installed = json.loads(report.stdout)

    assert installed["version"] == ephemera_client.__version__
    assert [name.split("<")[0].split(">")[0] for name in installed["requires"]] == ["httpx"]
    assert installed["typed"]
    assert {"EphemeraClient", "AsyncEphemeraClient", "IssuedToken", "EphemeraError"} <= set(
        installed["exports"]
    )
