"""Print the Celery queues a worker should consume: default, every tier's, every silo tenant's."""

from django.core.management.base import BaseCommand

from tenants.models import Tenant, Tier


class Command(BaseCommand):
    help = "Comma-separated list of Celery queues (for `celery worker -Q`)."

    def handle(self, *args, **options):
        queues = ["default"]
        queues += [q for q in Tier.objects.order_by("slug").values_list("celery_queue", flat=True)]
        for tenant in Tenant.objects.select_related("tier").order_by("slug"):
            queues.append(tenant.bindings.celery_queue)
        self.stdout.write(",".join(dict.fromkeys(queues)))
