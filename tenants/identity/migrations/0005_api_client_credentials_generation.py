"""API clients count the times their credentials were replaced (a take-over gives a new
secret); their tokens carry the count, so the old secret's tokens die with it.

Existing clients start at 0, which is also what a token issued before this carries (none):
their tokens keep working until the client's credentials change.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0004_api_client_owner"),
    ]

    operations = [
        migrations.AddField(
            model_name="apiclient",
            name="credentials_generation",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
