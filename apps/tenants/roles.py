"""What each role may do, in words, for whoever picks one (forms, the members list, e-mail).

Kept true to the code that enforces it: ``TenantAdminSite.has_permission`` opens the admin
from auditor up; ``TenantScopedAdmin`` lets every such role read and ``change_role`` (admin
by default) write; memberships, invitations and the Gemini key are owners'
(``change_role = Role.OWNER``); domains and organisations are the operator's; a member's
session may ask the API for tokens (``MemberSessionAuth``).
"""

from django.utils.html import format_html, format_html_join

from apps.tenants.models import Role

ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.MEMBER: (
        "Signs in with Google and may ask the API for tokens for themselves; cannot open "
        "this administration."
    ),
    Role.AUDITOR: (
        "Reads everything here (the audit trail and its exports, the dashboard, profiles, "
        "quotas, apps, members and invitations) and changes nothing."
    ),
    Role.ADMIN: (
        "Everything an auditor may, and sets up Live profiles, quotas, client apps and their keys."
    ),
    Role.OWNER: (
        "Everything an admin may, and invites people, changes roles, removes members and "
        "sets the organisation's Gemini API key. There is always at least one owner."
    ),
}


def role_descriptions() -> list[tuple[str, str]]:
    """(label, description) from the least to the most powerful role."""
    return [(role.label, ROLE_DESCRIPTIONS[role]) for role in Role]


def role_help_html() -> str:
    """The descriptions as a list, for the help text under a role picker."""
    return format_html(
        '<ul class="role-help">{}</ul>',
        format_html_join("", "<li><strong>{}</strong>: {}</li>", role_descriptions()),
    )
