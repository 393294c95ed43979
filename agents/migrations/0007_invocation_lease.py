from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0006_invocation_finished_at_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="invocation",
            name="lease",
            field=models.CharField(blank=True, max_length=300),
        ),
    ]
