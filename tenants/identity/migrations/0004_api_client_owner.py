"""API clients get an owner, whose rights they act on: at first the admin who created them.

Clients made before this are owned by their creator; a client whose creator's account is
gone has no owner and stays paused until an admin takes it over.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def owned_by_their_creator(apps, schema_editor):
    from tenants.context import all_tenants

    ApiClient = apps.get_model("identity", "ApiClient")
    # API clients are tenant rows under row-level security; this updates them all once.
    with all_tenants("migration: API clients are owned by their creator"):
        ApiClient.objects.update(owner_id=models.F("created_by_id"))


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0003_sso_domain_verification"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="apiclient",
            name="owner",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL
            ),
        ),
        migrations.RunPython(owned_by_their_creator, migrations.RunPython.noop),
    ]
