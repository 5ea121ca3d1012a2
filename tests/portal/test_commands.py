"""The README's first command (`manage.py dev`) and the demo seed, run for real."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from apps.clients.models import ClientApp
from apps.clients.selectors import client_key_authenticate
from apps.tenants.models import Domain, Membership, Organization, Role, User
from apps.tenants.selectors import gemini_api_key_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_prints_json(capsys):
    call_command("seed_demo", "--json")
    first = json.loads(capsys.readouterr().out)
    call_command("seed_demo", "--json")
    second = json.loads(capsys.readouterr().out)

    assert first["organization"] == second["organization"]
    assert Organization.objects.count() == 1
    assert Domain.objects.get().is_verified
    assert Membership.objects.count() == 4
    roles = {login["username"]: login["role"] for login in second["users"]}
    assert roles["owner@demo.example"] == "owner"
    assert roles["operator"] == "operator"
    assert User.objects.get(username="operator").is_superuser
    assert Membership.objects.get(user__username="auditor@demo.example").role == Role.AUDITOR
    # every run hands out fresh passwords, and the latest ones work
    old = {login["username"]: login["password"] for login in first["users"]}
    new = {login["username"]: login["password"] for login in second["users"]}
    owner = User.objects.get(username="owner@demo.example")
    assert old["owner@demo.example"] != new["owner@demo.example"]
    assert owner.check_password(new["owner@demo.example"])
    assert not owner.check_password(old["owner@demo.example"])
    # the demo profile and app exist once; each run's key works and retires the previous one
    assert (
        first["profile"]
        == second["profile"]
        == {
            "slug": "demo-voice",
            "model": "gemini-2.0-flash-live-001",
            "version": 1,
        }
    )
    assert client_key_authenticate(raw_key=second["client_key"]) is not None
    assert client_key_authenticate(raw_key=first["client_key"]) is None
    assert ClientApp.objects.count() == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dev_serves_the_admin_with_the_printed_demo_login(tmp_path):
    port, live_port = _free_port(), _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",
        "EPHEMERA_VAR_DIR": str(tmp_path / "var"),
        # Everything every process logs, as JSON, so the run's logs can be read back below.
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "manage.py",
            "dev",
            "--port",
            str(port),
            "--sandbox-port",
            str(_free_port()),
            "--live-port",
            str(live_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner = []
    try:
        for line in process.stdout:
            banner.append(line)
            if "Press Ctrl+C" in line:
                break
        text = "".join(banner)
        # the printed Live line, pasted the moment it shows (every server is up by then): a
        # fresh token from the portal, then a Live session with the real SDK over TLS through
        # the sandbox, which answers in audio
        assert f"Live API:  sandbox at https://127.0.0.1:{live_port}" in text
        one_liner = re.search(r"^  (SSL_CERT_FILE=.*)$", text, re.MULTILINE).group(1)
        pasted = subprocess.run(  # noqa: S602 - a line a person pastes into a shell
            one_liner,
            shell=True,
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "HOME": env["HOME"]},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert pasted.stdout.strip() == "got 9600 bytes of audio, turn complete", pasted.stderr
        owner_password = re.search(r"owner\s+owner@demo\.example\s+(\S+)", text).group(1)
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/admin/" in text

        browser = requests.Session()
        login_page = browser.get(f"{base}/admin/", timeout=5)
        assert login_page.url.startswith(f"{base}/accounts/login/")
        assert "Sign in with Google" in login_page.text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text)
        signed_in = browser.post(
            f"{base}/accounts/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "login": "owner@demo.example",
                "password": owner_password,
            },
            headers={"Referer": login_page.url},
            timeout=5,
        )
        assert signed_in.url == f"{base}/admin/"
        assert "Demo Organisation" in signed_in.text

        # the printed curl gets a token from the sandbox upstream
        client_key = re.search(r"Bearer (eph_\S+)'", text).group(1)
        minted = requests.post(
            f"{base}/api/v1/tokens",
            json={"profile": "demo-voice", "end_user": "demo-user"},
            headers={"Authorization": f"Bearer {client_key}"},
            timeout=10,
        )
        assert minted.status_code == 201, minted.text
        assert minted.json()["sandbox"] is True
        assert minted.json()["token"].startswith("auth_tokens/")

        assert process.poll() is None, "dev exited while serving"
    finally:
        process.send_signal(signal.SIGTERM)
        remaining, _ = process.communicate(timeout=30)
    assert process.returncode == 0, "".join(banner) + remaining

    # The logs of the whole run (web, worker, beat, sandbox) after the banner, which prints
    # the demo's key and passwords on purpose: no key, token or password is in them.
    secret_part = client_key.rsplit("_", 1)[1]
    for secret in (secret_part, minted.json()["token"], owner_password, "sandbox-dev-key"):
        assert secret not in remaining, f"a secret reached the logs: {secret[:6]}…"
    events = [json.loads(line) for line in remaining.splitlines() if line.startswith("{")]
    issuance = [e for e in events if e["event"] == "issuance"]
    assert [(e["org"], e["outcome"]) for e in issuance] == [("demo", "issued")] * 2
    assert (
        issuance[-1]["request_id"] == minted.headers["X-Request-ID"]
    )  # the curl, after the Live line
    assert any(e["event"] == "request" and e["path"] == "/api/v1/tokens" for e in events)


@pytest.mark.django_db
def test_rotate_encryption_keys_reencrypts_under_the_newest_key(two_orgs, settings, capsys):
    alpha, _ = two_orgs
    old_key, new_key = settings.FIELD_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_encryption_keys")

    assert "Re-encrypted 2 organisation Gemini key(s)." in capsys.readouterr().out
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert gemini_api_key_for(organization=alpha.organization) == "alpha-gemini-key-0000"


@pytest.mark.django_db
def test_rotate_encryption_keys_fails_naming_orgs_whose_key_was_dropped(two_orgs, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(CommandError, match="Gemini key of: alpha, bravo") as error:
        call_command("rotate_encryption_keys")

    assert "gemini-key-0000" not in str(error.value)


def test_dev_refuses_to_run_without_its_live_port(settings):
    settings.DEBUG = True

    with pytest.raises(CommandError, match="--live-port must be a port number"):
        call_command("dev", "--live-port", "0")
