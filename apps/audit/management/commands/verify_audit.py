"""``manage.py verify_audit [--org SLUG]``: recompute the audit chains, name what was altered."""

from django.core.management.base import BaseCommand, CommandError

from apps.audit.selectors import audit_chain_verify
from apps.tenants.models import Organization


class Command(BaseCommand):
    help = "Recompute each organisation's audit seal chain and report the first mismatch."

    def add_arguments(self, parser):
        parser.add_argument("--org", metavar="SLUG", help="Only this organisation.")

    def handle(self, *args, org=None, **options):
        organizations = Organization.objects.order_by("slug")
        if org:
            organizations = organizations.filter(slug=org)
            if not organizations.exists():
                raise CommandError(f"No organisation with slug {org!r}.")
        failed = []
        for organization in organizations:
            report = audit_chain_verify(organization=organization)
            summary = (
                f"{organization.slug}: {report.seals} seals, {report.grants} grants, "
                f"{report.changes} policy changes"
            )
            if report.ok:
                self.stdout.write(f"OK {summary}; head {report.head}")
            else:
                failed.append(organization.slug)
                self.stdout.write(f"FAILED {summary} verified before: {report.problem}")
        if failed:
            raise CommandError(f"Audit chain does not verify for: {', '.join(failed)}")
