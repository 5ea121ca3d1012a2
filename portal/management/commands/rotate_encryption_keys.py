from django.core.management.base import BaseCommand, CommandError

from apps.tenants.services import gemini_credentials_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret under the first FIELD_ENCRYPTION_KEYS entry. Run after "
        "putting a new key in front and before dropping the old one (deploy/OPERATOR.md)."
    )

    def handle(self, *args, **options):
        result = gemini_credentials_reencrypt()
        self.stdout.write(f"Re-encrypted {result.rotated} organisation Gemini key(s).")
        if result.unreadable:
            raise CommandError(
                "No FIELD_ENCRYPTION_KEYS entry opens the Gemini key of: "
                + ", ".join(result.unreadable)
                + ". Put the key they were written with back in the list (anywhere after the "
                "first), or have those owners set their key again."
            )
