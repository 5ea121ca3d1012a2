"""The sandbox's token mint refuses a token time as Google does: 400 with the field named."""

from datetime import UTC, datetime, timedelta

import pytest
import requests

from apps.issuance.sandbox.app import MINT_PATH


@pytest.mark.parametrize(
    ("expire_time", "problem"),
    [
        ("tomorrow", "invalid timestamp 'tomorrow'"),
        ("2030-01-01T12:00:00", "has no time zone"),
        ("2999-01-01T00:00:00Z", "is 20 hours or more ahead"),
    ],
)
def test_a_bad_expire_time_is_refused_and_names_the_field(sandbox, expire_time, problem):
    answer = requests.post(
        sandbox.url + MINT_PATH,
        json={"uses": 1, "expireTime": expire_time},
        headers={"x-goog-api-key": "sandbox-key"},
        timeout=5,
    )

    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert message.startswith("expireTime: ") and problem in message


def test_a_time_in_utc_with_z_is_minted(sandbox):
    in_ten_minutes = datetime.now(UTC) + timedelta(minutes=10)
    answer = requests.post(
        sandbox.url + MINT_PATH,
        json={"uses": 1, "expireTime": in_ten_minutes.strftime("%Y-%m-%dT%H:%M:%SZ")},
        headers={"x-goog-api-key": "sandbox-key"},
        timeout=5,
    )

    assert answer.status_code == 200
    assert answer.json()["name"].startswith("auth_tokens/sandbox-")
