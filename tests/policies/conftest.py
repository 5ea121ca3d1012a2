"""The portal that the guide's snippets call, and node for its JavaScript: a skip where node
is missing, a failure in CI.

``make test`` installs the @google/genai that tests/policies/guide_js/package-lock.json pins
(``npm ci --prefix tests/policies/guide_js``) when npm is present. Without node, or without
that install, the tests that need them skip with the reason, unless
``EPHEMERA_REQUIRE_NODE=1`` (.ci/run), where they fail.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from apps.issuance import gateway
from tests.live import serve_portal

GUIDE_JS = Path(__file__).parent / "guide_js"


def _missing(reason: str) -> None:
    if os.environ.get("EPHEMERA_REQUIRE_NODE") == "1":
        pytest.fail(
            f"The guide's JavaScript tests must run (EPHEMERA_REQUIRE_NODE=1), but {reason}."
        )
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary."""
    found = shutil.which("node")
    if found is None:
        _missing("node is not installed")
    return found


@pytest.fixture(scope="session")
def genai_js(node) -> Path:
    """tests/policies/guide_js/node_modules, holding exactly the pinned @google/genai."""
    pinned = json.loads((GUIDE_JS / "package.json").read_text())["dependencies"]["@google/genai"]
    installed = GUIDE_JS / "node_modules" / "@google" / "genai" / "package.json"
    if not installed.exists():
        _missing(f"@google/genai is not installed: run `npm ci --prefix {GUIDE_JS}` (make test)")
    package = json.loads(installed.read_text())
    if package["version"] != pinned:
        _missing(f"@google/genai {package['version']} is installed, not the pinned {pinned}")
    needs = int(re.fullmatch(r">=(\d+)\.\d+\.\d+", package["engines"]["node"]).group(1))
    ran = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)  # noqa: S603
    major = int(ran.stdout.strip().lstrip("v").split(".")[0])
    if major < needs:  # npm only warns; an SDK on a node it does not support fails obscurely
        _missing(f"@google/genai {pinned} needs node {needs} or newer; this node is {major}")
    return GUIDE_JS / "node_modules"


@pytest.fixture
def live_portal(settings, live_sandbox):
    """The portal under uvicorn, minting through the Live sandbox (whose tokens the guide's
    Live snippets then use)."""
    settings.GEMINI_BASE_URL = live_sandbox.url
    gateway.clients.clear()
    with serve_portal() as url:
        yield url
