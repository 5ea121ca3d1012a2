import json

from django.core.management.base import BaseCommand

from portal.demo import demo_seed


class Command(BaseCommand):
    help = "Create or refresh the demo organisation and its users (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
        parser.add_argument(
            "--password", help="Use this password for every demo login instead of new ones."
        )

    def handle(self, *args, **options):
        result = demo_seed(password=options["password"])
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        organization = result["organization"]
        self.stdout.write(f"Demo organisation: {organization['name']} ({organization['slug']})")
        for login in result["users"]:
            self.stdout.write(f"  {login['role']:<9} {login['username']}  {login['password']}")
        self.stdout.write(f"Profile: {result['profile']['slug']}")
        self.stdout.write(f"Client key for {result['client_app']['name']}: {result['client_key']}")
