"""Make a new active signing key; the previous one keeps verifying until its tokens expire."""

from django.core.management.base import BaseCommand

from tenants.identity import keys


class Command(BaseCommand):
    help = "Rotate the token signing keys (new active key; old one retiring; expired retiring keys retired)."

    def handle(self, *args, **options):
        key, retired = keys.rotate()
        self.stdout.write(f"active key: {key.kid}")
        for old in retired:
            self.stdout.write(f"retired (left the JWKS): {old.kid}")
