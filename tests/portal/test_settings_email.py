"""EMAIL_URL: one URL names where invitation e-mail goes, and its password is never shown."""

import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.mail import CONSOLE, DISABLED, LOCMEM, SMTP, EmailSettings, parse_email_url
from tests.portal.test_settings import production_env, run_manage

PASSWORD = "s3cret-Pa55"  # made up: the tests check that it is never shown


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"smtp://mailer:{PASSWORD}@mail.example.com",
            EmailSettings(SMTP, "mail.example.com", 25, "mailer", PASSWORD, False, False),
        ),
        (
            f"smtp+tls://mailer%40example.com:{PASSWORD}@mail.example.com:2587",
            EmailSettings(SMTP, "mail.example.com", 2587, "mailer@example.com", PASSWORD, True),
        ),
        (
            "smtp+tls://mail.example.com",
            EmailSettings(SMTP, "mail.example.com", 587, "", "", True, False),
        ),
        (
            "smtps://u:p%2Fq%3Ar%40s@smtp.example.com",
            EmailSettings(SMTP, "smtp.example.com", 465, "u", "p/q:r@s", False, True),
        ),
        ("SMTP://relay:2525", EmailSettings(SMTP, "relay", 2525)),
        ("console://", EmailSettings(CONSOLE)),
        ("locmem://", EmailSettings(LOCMEM)),
        ("", EmailSettings(DISABLED)),
    ],
)
def test_each_scheme_becomes_djangos_email_settings(url, expected):
    assert parse_email_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (f"smtq://mailer:{PASSWORD}@mail.example.com", "locmem://, not smtq://."),
        (f"smtp://mailer:{PASSWORD}@", "names no mail server host"),
        (f"smtp://mailer:{PASSWORD}@mail.example.com:port", "port is not a number"),
        (f"smtp://mailer:{PASSWORD}", "port is not a number"),
        (f"smtp://mailer:{PASSWORD}@mail.example.com/path", "takes no path, query or fragment"),
        (f"smtps://mailer:{PASSWORD}@mail.example.com?timeout=3", "no path, query or fragment"),
        (f"mailer:{PASSWORD}@mail.example.com", "must start with one of smtp://"),
        (f"mailer:{PASSWORD}@smtp://mail.example.com", "console://, locmem://."),
    ],
)
def test_a_wrong_url_is_refused_without_showing_its_password(url, complaint):
    with pytest.raises(ImproperlyConfigured) as refused:
        parse_email_url(url)

    assert complaint in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_the_parsed_value_does_not_print_its_password():
    parsed = parse_email_url(f"smtp://mailer:{PASSWORD}@mail.example.com")

    assert PASSWORD not in repr(parsed)


def _email_settings(tmp_path, env) -> dict:
    code = (
        "from django.conf import settings as s; import json; print(json.dumps({n: getattr(s, n)"
        " for n in ['EMAIL_BACKEND', 'EMAIL_HOST', 'EMAIL_PORT', 'EMAIL_HOST_USER',"
        " 'EMAIL_HOST_PASSWORD', 'EMAIL_USE_TLS', 'EMAIL_USE_SSL', 'DEFAULT_FROM_EMAIL',"
        " 'PORTAL_URL']} | {'EMAIL_URL': hasattr(s, 'EMAIL_URL')}))"
    )
    result = run_manage("shell", "-c", code, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_make_dev_prints_mail_and_production_without_email_url_sends_none(tmp_path):
    dev = _email_settings(tmp_path, {"DEBUG": "1"})
    production = _email_settings(tmp_path, production_env())

    assert dev["EMAIL_BACKEND"] == CONSOLE
    assert production["EMAIL_BACKEND"] == DISABLED


def test_production_reads_email_url_from_address_and_portal_url(tmp_path):
    env = {
        **production_env(),
        "EMAIL_URL": f"smtp+tls://mailer:{PASSWORD}@smtp.example.com:587",
        "DEFAULT_FROM_EMAIL": "Ephemera <ephemera@example.com>",
        "PORTAL_URL": "https://ephemera.example.com/",
    }

    configured = _email_settings(tmp_path, env)

    assert configured == {
        "EMAIL_BACKEND": SMTP,
        "EMAIL_HOST": "smtp.example.com",
        "EMAIL_PORT": 587,
        "EMAIL_HOST_USER": "mailer",
        "EMAIL_HOST_PASSWORD": PASSWORD,
        "EMAIL_USE_TLS": True,
        "EMAIL_USE_SSL": False,
        "DEFAULT_FROM_EMAIL": "Ephemera <ephemera@example.com>",
        "PORTAL_URL": "https://ephemera.example.com",
        "EMAIL_URL": False,  # not a setting: Django's error pages would show its password
    }


def test_a_bad_email_url_stops_the_portal_without_printing_the_password(tmp_path):
    env = {"DEBUG": "1", "EMAIL_URL": f"smtp://mailer:{PASSWORD}@mail.example.com/oops"}

    result = run_manage("check", env=env, tmp_path=tmp_path)

    assert result.returncode != 0
    assert "EMAIL_URL takes no path" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_portal_url_must_be_an_http_address(tmp_path):
    result = run_manage(
        "check", env={"DEBUG": "1", "PORTAL_URL": "ephemera.example.com"}, tmp_path=tmp_path
    )

    assert result.returncode != 0
    assert "PORTAL_URL must start with https:// or http://" in result.stderr
