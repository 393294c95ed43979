"""The first signing key, made on first use by whichever worker thread gets there first."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection

from tenants.identity import keys
from tenants.identity.models import KeyStatus, SigningKey


def test_it_makes_the_first_key_on_first_use(db):
    kid, _ = keys.signing_key()
    assert SigningKey.objects.get(status=KeyStatus.ACTIVE).kid == kid


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's shared-cache test database locks the table")
@pytest.mark.django_db(transaction=True)
def test_it_uses_the_key_another_thread_made_at_the_same_moment(monkeypatch):
    made = keys.create_key

    def other_thread():
        made()  # committed on that thread's own connection
        connection.close()

    def beaten_to_it(*args, **kwargs):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        raise IntegrityError("duplicate key value violates unique constraint signing_key_one_active")

    monkeypatch.setattr(keys, "create_key", beaten_to_it)
    kid, private_key = keys.signing_key()
    assert SigningKey.objects.get(status=KeyStatus.ACTIVE).kid == kid
    assert private_key is not None
