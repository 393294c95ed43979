"""`migrate`, run as the schema owner when DATABASE_OWNER_URL is set.

The application role cannot create or alter tables (and must not: it would
own them and escape row-level security), so migrations connect as the owner.
"""

from django.core.management.commands.migrate import Command as MigrateCommand

from portal.db.owner import as_owner


class Command(MigrateCommand):
    def handle(self, *args, **options):
        with as_owner(options.get("database") or "default"):
            return super().handle(*args, **options)
