"""The asyncio client against a live portal: the same token, profiles, errors and retries."""

import pytest
from ephemera_client import AsyncEphemeraClient, IssuedToken, ProfileNotFound, UpstreamError

from apps.audit.models import TokenGrant
from apps.issuance.sandbox import Faults

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def client_for(portal, fake_clock, **options) -> AsyncEphemeraClient:
    return AsyncEphemeraClient(
        portal.url, portal.alpha.raw_client_key, _sleep=fake_clock.asleep, **options
    )


async def test_a_token_and_the_profiles(portal, fake_clock):
    async with client_for(portal, fake_clock) as client:
        issued = await client.token("alpha-voice", "user-7", expire_seconds=300)
        profiles = await client.profiles()

    assert isinstance(issued, IssuedToken)
    assert issued.token.startswith("auth_tokens/")
    assert [profile.slug for profile in profiles] == ["alpha-voice"]
    grant = await TokenGrant.objects.aget(public_id=issued.grant_id)
    assert (grant.outcome, grant.end_user) == (TokenGrant.Outcome.ISSUED, "user-7")


async def test_errors_and_a_retry(portal, sandbox, fake_clock):
    sandbox.state.faults = Faults(status=429)
    fake_clock.on_sleep = lambda: setattr(sandbox.state, "faults", Faults(status=500))
    async with client_for(portal, fake_clock) as client:
        with pytest.raises(UpstreamError):  # 503 retried after Retry-After, then a 502 kept
            await client.token("alpha-voice")
        with pytest.raises(ProfileNotFound):
            await client.token("bravo-voice")

    [wait] = fake_clock.slept
    assert 5 <= wait <= 30
    assert sandbox.state.calls == 2
