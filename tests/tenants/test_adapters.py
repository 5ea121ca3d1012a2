"""The account adapter: whatever allauth may try to mail, only the platform operator gets it."""

import pytest
from allauth.account.adapter import get_adapter
from allauth.core import context
from django.core import mail
from django.test import RequestFactory

from apps.tenants.models import Role

pytestmark = pytest.mark.django_db


def send_reset_mail(address: str) -> None:
    with context.request_context(RequestFactory().get("/")):
        get_adapter().send_mail(
            "account/email/password_reset_key",
            address,
            {"password_reset_url": "https://ephemera.test/reset", "user": None},
        )


def test_account_mail_to_a_member_or_a_stranger_is_never_sent(two_orgs):
    alpha, _ = two_orgs

    send_reset_mail(alpha.users[Role.OWNER].email)
    send_reset_mail("stranger@elsewhere.test")

    assert mail.outbox == []


def test_account_mail_to_the_operator_is_sent(operator):
    operator.email = "ops@platform.test"
    operator.save()

    send_reset_mail("OPS@platform.test")

    assert [message.to for message in mail.outbox] == [["OPS@platform.test"]]
