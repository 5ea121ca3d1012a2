"""The owner's forms: who to invite and which role someone holds.

Every refusal is a form error that says what to do instead, never a server error.
"""

from django import forms
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.tenants.models import Invitation, Membership, Role
from apps.tenants.roles import role_help_html
from apps.tenants.selectors import (
    invitation_open_for_email,
    membership_for_email,
    membership_is_last_owner,
)
from apps.tenants.services import INVITATION_MAX_TTL, invitation_expiry_validate

LAST_OWNER = "An organisation must keep at least one owner."


class InvitationForm(forms.ModelForm):
    """The admin binds the active organisation to ``instance`` before validation
    (``TenantBoundFormMixin``), so the checks below know whose members to look at."""

    class Meta:
        model = Invitation
        fields = ("email", "role", "expires_at")
        help_texts = {
            "email": "The exact address they sign in to Google with.",
            "expires_at": (
                f"Unused by then, the invitation lapses. At most {INVITATION_MAX_TTL.days} days "
                "ahead."
            ),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "role" in self.fields:
            self.fields["role"].help_text = role_help_html()

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        invitation_expiry_validate(expires_at)
        return expires_at

    def clean_email(self):
        email = self.cleaned_data["email"].strip().lower()
        organization = getattr(self.instance, "organization", None)
        if organization is None:
            return email  # the organisation is a field of this form: checked in clean()
        self._refuse_members_and_open_invitations(organization, email)
        return email

    def clean(self):
        cleaned = super().clean()
        organization = cleaned.get("organization")
        if organization is not None and cleaned.get("email"):
            try:
                self._refuse_members_and_open_invitations(organization, cleaned["email"])
            except ValidationError as error:
                self.add_error("email", error)
        return cleaned

    def _refuse_members_and_open_invitations(self, organization, email: str) -> None:
        membership = membership_for_email(organization=organization, email=email)
        if membership is not None:
            raise ValidationError(
                format_html(
                    "{} is already a member of {}, as {}. To give them another role, "
                    '<a href="{}">change their membership</a> instead.',
                    email,
                    organization.name,
                    membership.get_role_display(),
                    reverse("admin:tenants_membership_change", args=[membership.pk]),
                ),
                code="member",
            )
        invitation = invitation_open_for_email(organization=organization, email=email)
        if invitation is not None:
            raise ValidationError(
                format_html(
                    "{} already has an open invitation, as {}, until {}. "
                    '<a href="{}">Open it to send the e-mail again</a>, or revoke it there '
                    "before inviting them with another role.",
                    email,
                    invitation.get_role_display(),
                    timezone.localtime(invitation.expires_at).strftime("%Y-%m-%d %H:%M"),
                    reverse("admin:tenants_invitation_change", args=[invitation.pk]),
                ),
                code="open_invitation",
            )


class MembershipForm(forms.ModelForm):
    """A member's role, with what each role may do beside the picker."""

    class Meta:
        model = Membership
        fields = ("organization", "user", "role")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "role" in self.fields:
            self.fields["role"].help_text = role_help_html()

    def clean_role(self):
        role = self.cleaned_data["role"]
        if (
            self.instance.pk
            and role != Role.OWNER
            and membership_is_last_owner(membership=self.instance)
        ):
            raise ValidationError(LAST_OWNER)
        return role
