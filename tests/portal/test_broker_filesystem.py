"""The embedded broker (Celery's filesystem transport) never hands a worker half a message."""

from __future__ import annotations

from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem as kombu_filesystem

from portal import broker


@pytest.fixture
def channel(tmp_path):
    for name in ("out", "control", "processed"):
        (tmp_path / name).mkdir()
    options = {
        "data_folder_in": str(tmp_path / "out"),
        "data_folder_out": str(tmp_path / "out"),
        "control_folder": str(tmp_path / "control"),
        "processed_folder": str(tmp_path / "processed"),
        "store_processed": False,
    }
    with Connection("filesystem://", transport=broker.FilesystemTransport, transport_options=options) as connection:
        yield connection.default_channel


def test_a_worker_polling_while_a_message_is_written_never_reads_it_half_written(channel, monkeypatch):
    # kombu writes a message into the queue's folder after creating its file there: a worker
    # polling in between took the empty file and died on it ("Unrecoverable error:
    # JSONDecodeError", seen in CI under load), and the message was lost.
    polled = []
    lock = kombu_filesystem.lock

    def lock_then_poll(file, flags):
        lock(file, flags)
        if not polled:  # the worker polls the moment the producer holds the file
            try:
                polled.append(channel._get("q"))
            except Empty:
                polled.append("empty")
            except Exception as exc:  # what the worker's loop would have died of
                polled.append(exc)

    monkeypatch.setattr(kombu_filesystem, "lock", lock_then_poll)
    channel._put("q", {"body": "hello"})
    monkeypatch.setattr(kombu_filesystem, "lock", lock)
    assert polled == ["empty"]
    assert channel._get("q") == {"body": "hello"}  # and the whole message is there for the next poll
    with pytest.raises(Empty):
        channel._get("q")


def test_the_embedded_broker_is_this_transport(settings):
    from portal.celery import app

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("the broker is Redis here")
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, broker.FilesystemTransport)
