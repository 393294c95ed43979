"""/healthz (the process is alive) and /readyz (the database and the broker answer)."""

import pytest
from django.db import OperationalError

from portal import views

# Port 1 on the loopback: nothing listens there, so the connection is refused at once.
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def unreachable_broker(monkeypatch):
    # Celery reads CELERY_BROKER_URL from the environment before its configuration,
    # so this points the real app, and a real connection attempt, at a dead port.
    monkeypatch.setenv("CELERY_BROKER_URL", UNREACHABLE_BROKER)
    monkeypatch.delenv("CELERY_BROKER_WRITE_URL", raising=False)


def test_it_answers_ok_on_healthz(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_it_answers_healthz_without_the_database(client):
    # No `db` fixture: pytest-django blocks the database, so any query would fail the test.
    response = client.get("/healthz")
    assert response.status_code == 200


def test_it_is_ready_when_the_database_and_the_broker_answer(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "problems": []}
    assert "no-cache" in response["Cache-Control"]


def test_it_answers_503_on_readyz_when_the_database_fails(client, db, monkeypatch):
    monkeypatch.setattr(views, "_check_database", lambda: "database: OperationalError")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "problems": ["database: OperationalError"]}


class UnreachableDatabase:
    def cursor(self):
        raise OperationalError("connection to server at 10.0.0.5 failed: Connection refused")


def test_it_names_the_kind_of_database_failure_and_not_the_details(monkeypatch):
    monkeypatch.setattr(views, "connection", UnreachableDatabase())
    assert views._check_database() == "database: OperationalError"


def test_it_answers_503_on_readyz_when_the_broker_is_unreachable(client, db, unreachable_broker):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert len(body["problems"]) == 1
    assert body["problems"][0].startswith("broker: ")
    # The address of the broker stays out of an unauthenticated answer.
    assert b"127.0.0.1" not in response.content
    assert b"redis://" not in response.content


def test_it_names_both_failures_at_once(client, db, monkeypatch, unreachable_broker):
    monkeypatch.setattr(views, "_check_database", lambda: "database: OperationalError")
    body = client.get("/readyz").json()
    assert body["problems"][0] == "database: OperationalError"
    assert body["problems"][1].startswith("broker: ")
