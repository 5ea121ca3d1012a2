from datetime import timedelta

import factory
from django.utils import timezone

from apps.tenants.models import Domain, Invitation, Membership, Organization, Role, User
from portal.crypto import token_fingerprint


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Organisation {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}@example.test")
    email = factory.LazyAttribute(lambda user: user.username)
    password = factory.django.Password("correct horse battery staple")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


class DomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Domain

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"domain{n}.test")
    is_verified = True
    verified_at = factory.LazyFunction(timezone.now)


class InvitationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invitation

    organization = factory.SubFactory(OrganizationFactory)
    email = factory.Sequence(lambda n: f"invitee{n}@example.test")
    role = Role.AUDITOR
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=7))


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "policies.LiveConstraintProfile"

    organization = factory.SubFactory(OrganizationFactory)
    slug = factory.Sequence(lambda n: f"profile-{n}")
    name = factory.LazyAttribute(lambda profile: f"Profile {profile.slug}")
    model = "gemini-2.0-flash-live-001"
    config = factory.LazyFunction(lambda: {"response_modalities": ["AUDIO"]})


class ClientAppFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "clients.ClientApp"

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"App {n}")


class QuotaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "policies.Quota"

    organization = factory.SubFactory(OrganizationFactory)
    scope = "org"
    window = "minute"
    limit = 10


class TokenGrantFactory(factory.django.DjangoModelFactory):
    """An issued grant whose token (``token_for(grant)``) would be alive for half an hour."""

    class Meta:
        model = "audit.TokenGrant"

    organization = factory.SubFactory(OrganizationFactory)
    end_user = factory.Sequence(lambda n: f"user-{n}")
    profile_slug = "voice"
    profile_version = 1
    outcome = "issued"
    requested_at = factory.LazyFunction(timezone.now)
    issued_at = factory.LazyAttribute(lambda grant: grant.requested_at)
    expire_time = factory.LazyAttribute(lambda grant: grant.requested_at + timedelta(minutes=30))
    new_session_expire_time = factory.LazyAttribute(
        lambda grant: grant.requested_at + timedelta(minutes=1)
    )
    uses = 1
    lifecycle = "active"
    request_id = factory.Sequence(lambda n: f"req-{n:06d}")
    request_body = factory.LazyFunction(lambda: {"uses": 1})
    token_fingerprint = factory.LazyAttribute(lambda grant: token_fingerprint(token_for(grant)))


def token_for(grant) -> str:
    """The token a factory grant stands for (tests paste it into the audit-hash lookup)."""
    return f"auth_tokens/test-{grant.end_user}-{grant.request_id}"
