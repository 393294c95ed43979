"""The Celery app. Broker: Redis when REDIS_URL is set, else the filesystem under var/."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# A filesystem:// broker (the embedded default) is kombu's with the portal's channel, which
# writes each message whole before a worker can see it (portal/broker.py). By the URL's
# scheme, not CELERY_BROKER_TRANSPORT: Celery takes CELERY_BROKER_URL from the environment
# over the settings, and the transport must follow the URL actually in effect.
TRANSPORT_ALIASES["filesystem"] = "portal.broker:FilesystemTransport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = "default"
app.conf.worker_prefetch_multiplier = 1
app.conf.task_acks_late = True
app.conf.task_reject_on_worker_lost = True
app.conf.broker_connection_retry_on_startup = True
# Celery's Django fixup closes the database connection around every task unless
# told otherwise: a new PostgreSQL connection per turn (make bench: ~17 ms of
# server CPU each). Reuse it; the tenant is set per transaction, never per connection.
app.conf.CELERY_DB_REUSE_MAX = 1000
app.autodiscover_tasks()


def ensure_broker_folders() -> None:
    """The filesystem transport needs its folders before the first message."""
    from django.conf import settings

    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
        if key in options:
            os.makedirs(options[key], exist_ok=True)
