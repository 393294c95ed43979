"""Price book v1 from the model catalogue's list prices, when there is a catalogue.

A fresh database has no models yet, so there is nothing to copy: until an
operator publishes a book (or `billing.pricing.publish_from_catalogue()` runs),
events are priced from the catalogue and record price_book_version 0.
"""

from django.db import migrations
from django.utils import timezone


def seed(apps, schema_editor):
    PriceBook = apps.get_model("billing", "PriceBook")
    ModelPrice = apps.get_model("billing", "ModelPrice")
    ModelOffering = apps.get_model("agents", "ModelOffering")
    offerings = list(ModelOffering.objects.all())
    if PriceBook.objects.exists() or not offerings:
        return
    book = PriceBook.objects.create(
        version=1, effective_from=timezone.now(), note="v1: copied from the model catalogue's list prices"
    )
    ModelPrice.objects.bulk_create(
        ModelPrice(
            price_book=book,
            model_key=offering.key,
            per_1k_input=offering.price_per_1k_input,
            per_1k_output=offering.price_per_1k_output,
        )
        for offering in offerings
    )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_metering_limits_invoices"),
        ("agents", "0001_initial"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
