from django.conf import settings
from django.contrib.auth.backends import ModelBackend


class OperatorPasswordBackend(ModelBackend):
    """Password sign-in for the platform operator only; members come through Google.

    ``MEMBER_PASSWORD_LOGIN`` (on under ``DEBUG``) lets the seeded demo users in too.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            return None
        if user.is_superuser or settings.MEMBER_PASSWORD_LOGIN:
            return user
        return None
