"""Passwords are for the operator; members sign in with Google (demo users only under dev)."""

import pytest

from apps.tenants.models import Role

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # the factories' password


def password_sign_in(client, username):
    return client.post("/accounts/login/", {"login": username, "password": PASSWORD})


def test_operator_signs_in_with_a_password(client, operator):
    response = password_sign_in(client, "operator")

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize("role", list(Role))
def test_members_cannot_use_a_password(client, two_orgs, settings, role):
    settings.MEMBER_PASSWORD_LOGIN = False
    alpha, _ = two_orgs

    response = password_sign_in(client, alpha.users[role].username)

    assert response.status_code == 200  # the form again, with an error
    assert not response.wsgi_request.user.is_authenticated
    assert client.get("/admin/").status_code == 302


def test_demo_mode_lets_members_use_a_password(client, two_orgs, settings):
    settings.MEMBER_PASSWORD_LOGIN = True
    alpha, _ = two_orgs

    response = password_sign_in(client, alpha.users[Role.ADMIN].username)

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
