"""Celery's transports as the portal runs them: Redis with one client per channel, and the
embedded filesystem broker writing each message whole before a worker can see it.

Redis: one Redis client per channel instead of one per operation.

kombu's Redis channel builds a new `redis.Redis` for every synchronous operation: with
acks_late that is two per task (recording the unacknowledged message, then acknowledging
it). redis-py's client constructor fills a table of a few hundred response callbacks, about
50 µs of Python each time, more when 32 worker threads contend for the GIL. A client is
safe to share between threads (each command takes a connection from the pool, a pipeline
is a new object), so the channel keeps the one it made. Nothing else changes: same pool,
same keys, same acknowledgement emulation and visibility timeout.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(kombu_redis.Channel):
    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self._pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


# --- the embedded default: Celery's filesystem transport --------------------------------------
#
# kombu's filesystem channel creates a message's file in the queue's folder and then writes
# it. A worker polling in between takes the still-empty file, fails to decode it and stops
# ("Unrecoverable error: JSONDecodeError"), and the message is gone (seen in CI under load).
# Here a message is written under a name no poll matches and renamed into place when whole:
# a rename within a folder is atomic, so a poll finds the whole message or none.


class FilesystemChannel(kombu_filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # "._…" never matches a poll (_get takes "<stamp>_<uuid>.<queue>.msg" names only).
        partial = os.path.join(self.data_folder_out, f"._{name}.partial")
        try:
            with open(partial, "wb", buffering=0) as file:
                kombu_filesystem.lock(file, kombu_filesystem.LOCK_EX)
                try:
                    file.write(str_to_bytes(dumps(payload)))
                finally:
                    kombu_filesystem.unlock(file)
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class FilesystemTransport(kombu_filesystem.Transport):
    Channel = FilesystemChannel
