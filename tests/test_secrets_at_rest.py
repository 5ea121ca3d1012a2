"""No secret a user hands Ephemera, or Ephemera hands out, is ever stored in clear."""

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.audit.models import PolicyChange
from apps.clients import services as client_services
from apps.tenants import services as tenant_services
from apps.tenants.models import GeminiCredential
from apps.tenants.selectors import gemini_api_key_for
from tests.factories import ClientAppFactory

pytestmark = pytest.mark.django_db

GEMINI_KEY = "test-only-gemini-key-0123456789"


def every_stored_text():
    for model in apps.get_models():
        for row in model._default_manager.values():
            for value in row.values():
                if value is not None:
                    yield f"{model._meta.label}", str(value)


def test_no_plaintext_secret_in_any_column(two_orgs):
    alpha, _ = two_orgs
    app = ClientAppFactory(organization=alpha.organization)
    _, raw_key = client_services.client_key_create(
        organization=alpha.organization, client_app=app, actor=alpha.owner
    )
    old, _ = client_services.client_key_create(
        organization=alpha.organization, client_app=app, actor=alpha.owner
    )
    _, rotated_raw = client_services.client_key_rotate(
        organization=alpha.organization, key=old, actor=alpha.owner, grace_until=timezone.now()
    )
    tenant_services.gemini_credential_set(
        organization=alpha.organization, api_key=GEMINI_KEY, actor=alpha.owner
    )
    tenant_services.gemini_credential_set(
        organization=alpha.organization, api_key=GEMINI_KEY + "v2", actor=alpha.owner
    )

    secrets_handed_out = [raw_key, raw_key.split("_")[2], rotated_raw.split("_")[2], GEMINI_KEY]
    leaks = [
        (table, secret[:8])
        for table, text in every_stored_text()
        for secret in secrets_handed_out
        if secret in text
    ]
    assert leaks == []
    assert gemini_api_key_for(organization=alpha.organization) == GEMINI_KEY + "v2"
    credential = GeminiCredential.objects.get(organization=alpha.organization)
    assert credential.last_four == "89v2"
    change = PolicyChange.objects.filter(object_type="tenants.geminicredential").last()
    assert change.after["ciphertext"] == "[redacted]"


def test_the_platform_key_is_the_fallback(two_orgs, settings):
    alpha, _ = two_orgs
    settings.GEMINI_API_KEY = "platform-key"
    assert gemini_api_key_for(organization=alpha.organization) == "alpha-gemini-key-0000"

    tenant_services.gemini_credential_clear(organization=alpha.organization, actor=alpha.owner)

    assert gemini_api_key_for(organization=alpha.organization) == "platform-key"
    assert PolicyChange.objects.filter(
        object_type="tenants.geminicredential", action="delete"
    ).exists()


def test_a_credential_that_is_not_a_key_is_refused(two_orgs):
    alpha, _ = two_orgs

    with pytest.raises(ValidationError):
        tenant_services.gemini_credential_set(
            organization=alpha.organization, api_key="short", actor=alpha.owner
        )
    assert gemini_api_key_for(organization=alpha.organization) == "alpha-gemini-key-0000"
