"""A conversation deleted while a message is posted to it, renamed, or its turn runs.

Each side of a race runs on a thread of its own with its own database connection, as the
web process's requests and the worker do. On SQLite the threads share a file database
(the test database itself lives in memory, so it is copied to one first), the way
`make run`'s web process and Celery worker share var/portal.sqlite3: every write there
is a BEGIN IMMEDIATE transaction or a single statement, and waits for the other writer
(the connection's busy timeout) instead of failing with "database is locked". One side
wins; the other gets the product's answer: a message posted to a conversation deleted
meanwhile is refused with 409 (or 404 once the delete is visible before it is even
found), a delete while an answer is being written is refused with 409. Never a 500.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import traceback

import pytest
from django.db import connection, connections
from django.test import Client

from agents import services, streaming, turns
from agents.models import FINAL_STATUSES, Conversation, Invocation, Message
from portal.db import busy
from tenants.context import tenant_context
from tenants.services import Actor
from tests.agents.test_chat import HX, chat_url, flash, in_tenant
from tests.billing.processes import sqlite_file_copy
from tests.knowledge.helpers import make_knowledge_rows
from tests.portal.helpers import problem

pytestmark = pytest.mark.django_db(transaction=True)

GONE = "This conversation was deleted."
BUSY = "An answer is still being written"


def api(rest: str) -> str:
    return f"/api/v1/tenants/alpha/{rest}"


@pytest.fixture
def shared_database(tmp_path):
    """Call it once the test's data is written: from then on, connections opened by other
    threads use a database they can share (on SQLite, a file copy of the test database)."""
    saved = []

    def share(busy_timeout: float | None = None):
        if connection.vendor != "sqlite":
            return None
        path = sqlite_file_copy(tmp_path / "shared.sqlite3")
        saved.append(connections.settings["default"])
        options = dict(saved[0]["OPTIONS"])
        if busy_timeout is not None:
            options["timeout"] = busy_timeout
        connections.settings["default"] = {**saved[0], "NAME": str(path), "OPTIONS": options}
        return path

    yield share
    if saved:
        connections.settings["default"] = saved[0]


def on_threads(*functions, timeout: float = 120) -> list[str]:
    """Run the functions at once, each on its own thread and connection; their tracebacks."""
    errors: list[str] = []
    start = threading.Barrier(len(functions))

    def body(function):
        try:
            start.wait(10)
            function()
        except Exception:
            errors.append(traceback.format_exc())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(f,)) for f in functions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    return errors


def on_a_thread(function):
    """`function()` on a connection of the shared database."""
    result = []
    errors = on_threads(lambda: result.append(function()))
    assert not errors, errors
    return result[0]


def signed_in(user) -> Client:
    client = Client(raise_request_exception=False)  # a 500 is an answer here, not an exception
    client.force_login(user)
    return client


def post_json(client, url: str, body: dict):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_post_rename_and_delete_of_one_conversation_at_once_end_cleanly(
    world, catalogue, runtime, eager, shared_database
):
    """Rounds of three requests at once on the same conversation: a message (its turn runs
    as soon as it commits, as an idle worker would take it), a rename and a delete."""
    side = world.a
    actor = Actor(user=side.member, membership=side.memberships["member"])
    with tenant_context(side.tenant):
        conversations = [services.start_conversation(actor, catalogue.helpdesk.pk).pk for _ in range(12)]
    poster, renamer, deleter = signed_in(side.member), signed_in(side.member), signed_in(side.member)
    shared_database()
    answers: list[tuple[str, int, object]] = []
    lock = threading.Lock()
    rounds = threading.Barrier(3)

    def note(kind, pk, response):
        body = response.json() if response.content else None
        with lock:
            answers.append((kind, pk, response.status_code, body))

    def post():
        for pk in conversations:
            rounds.wait(30)
            note("post", pk, post_json(poster, api(f"conversations/{pk}/messages/"), {"text": "Refunds?"}))

    def rename():
        for pk in conversations:
            rounds.wait(30)
            response = renamer.patch(
                api(f"conversations/{pk}/"), data=json.dumps({"title": "Renamed"}), content_type="application/json"
            )
            note("rename", pk, response)

    def delete():
        for pk in conversations:
            rounds.wait(30)
            note("delete", pk, deleter.delete(api(f"conversations/{pk}/")))

    errors = on_threads(post, rename, delete)
    assert not errors, "\n".join(errors)
    allowed = {"post": {202, 404, 409}, "rename": {200, 404, 409}, "delete": {204, 404, 409}}
    for kind, pk, code, body in answers:
        assert code in allowed[kind], (kind, pk, code, body)
        if code == 409:
            assert body["status"] == 409 and (body["detail"] == GONE or body["detail"].startswith(BUSY)), body

    def outcome():
        with tenant_context(side.tenant):
            found = {}
            for pk in conversations:
                conversation = Conversation.objects.get(pk=pk)
                texts = list(Message.objects.filter(conversation_id=pk).values_list("content", flat=True))
                running = Invocation.objects.filter(conversation_id=pk).exclude(status__in=FINAL_STATUSES)
                invocations = list(Invocation.objects.filter(conversation_id=pk).values_list("pk", flat=True))
                # What the relay still holds besides a final event, which a worker that
                # committed its finish just before the delete publishes just after it.
                events = sum(1 for i in invocations for e in streaming.read(i, 0) if not e.is_final)
                found[pk] = (conversation.deleted_at is not None, conversation.title, texts, running.count(), events)
            return found

    found = outcome() if connection.vendor != "sqlite" else on_a_thread(outcome)
    deleted = {pk for kind, pk, code, _ in answers if kind == "delete" and code == 204}
    for pk, (is_deleted, title, texts, running, events) in found.items():
        assert is_deleted == (pk in deleted), pk
        assert running == 0, pk  # every turn that was accepted ran to its end
        if is_deleted:
            # Nothing written after the delete survives it: no message posted behind its back.
            assert (title, set(texts) - {""}, events) == ("", set(), 0), pk


@pytest.fixture
def running_turn(world, catalogue, runtime):
    """A turn whose runtime pauses mid-answer until `proceed` is set."""
    started, proceed = threading.Event(), threading.Event()

    def pause():
        started.set()
        assert proceed.wait(30)
        return {"type": "delta", "text": " and more."}

    runtime.events.insert(1, pause)
    return started, proceed


def test_a_delete_while_the_worker_writes_the_answer_is_refused_then_succeeds(
    world, catalogue, runtime, running_turn, shared_database
):
    side = world.a
    started, proceed = running_turn
    actor = Actor(user=side.member, membership=side.memberships["member"])
    with tenant_context(side.tenant):
        conversation = services.start_conversation(actor, catalogue.helpdesk.pk)
        invocation = services.post_message(actor, conversation, "Refunds?")  # queued; the worker takes it below
    deleter = signed_in(side.member)
    shared_database()
    answers = []

    def worker():
        with tenant_context(side.tenant):
            answers.append(("worker", turns.run(side.tenant, str(invocation.pk))))

    def delete_while_it_streams():
        assert started.wait(30)
        try:
            for _ in range(3):  # each while the worker is between two events of the answer
                answers.append(("delete", deleter.delete(api(f"conversations/{conversation.pk}/"))))
                time.sleep(0.02)
        finally:
            proceed.set()

    errors = on_threads(worker, delete_while_it_streams)
    assert not errors, "\n".join(errors)
    assert answers[-1] == ("worker", "done")
    for _, response in answers[:-1]:
        assert problem(response, 409)["detail"].startswith(BUSY)
    # Once the answer is written, the delete goes through.
    response = on_a_thread(lambda: deleter.delete(api(f"conversations/{conversation.pk}/")))
    assert response.status_code == 204, response.content


# --- the moment between finding the conversation and writing to it -------------------------


@pytest.fixture
def deleted_once_found(world, monkeypatch):
    """The conversation is deleted (another tab's request committing) right after this
    request has found it, before it writes: the narrow window the threads above hit by chance."""
    found = services.access_conversation

    def found_then_deleted(actor, conversation_id):
        conversation = found(actor, conversation_id)
        if conversation is not None:
            services.delete_conversation(actor, found(actor, conversation_id))
        return conversation

    monkeypatch.setattr(services, "access_conversation", found_then_deleted)


def _conversation(world, catalogue):
    actor = Actor(user=world.a.member, membership=world.a.memberships["member"])
    with tenant_context(world.a.tenant):
        return services.start_conversation(actor, catalogue.helpdesk.pk)


def _nothing_written(world, conversation) -> None:
    assert in_tenant(world.a, lambda: Message.objects.filter(conversation_id=conversation.pk).count()) == 0


def test_the_api_refuses_a_message_to_a_conversation_deleted_meanwhile_with_409(
    client, world, catalogue, runtime, eager, deleted_once_found
):
    conversation = _conversation(world, catalogue)
    client.force_login(world.a.member)
    response = post_json(client, api(f"conversations/{conversation.pk}/messages/"), {"text": "Refunds?"})
    assert problem(response, 409)["detail"] == GONE
    _nothing_written(world, conversation)
    # Renaming it too.
    conversation = _conversation(world, catalogue)
    response = client.patch(
        api(f"conversations/{conversation.pk}/"), data=json.dumps({"title": "Mine"}), content_type="application/json"
    )
    assert problem(response, 409)["detail"] == GONE


def test_the_page_tells_why_a_message_to_a_conversation_deleted_meanwhile_was_refused(
    client, world, catalogue, runtime, eager, deleted_once_found
):
    client.force_login(world.a.member)
    conversation = _conversation(world, catalogue)
    # The composer (htmx): the reason, in the composer, with a status chat.js swaps in.
    response = client.post(chat_url(world.a, f"{conversation.pk}/messages/"), {"text": "Refunds?"}, **HX)
    assert response.status_code == 409
    assert GONE in response.content.decode()
    _nothing_written(world, conversation)
    # Without JavaScript: to the list of conversations (its own page is gone), told why.
    conversation = _conversation(world, catalogue)
    response = client.post(chat_url(world.a, f"{conversation.pk}/messages/"), {"text": "Refunds?"})
    assert response.status_code == 302 and response["Location"] == chat_url(world.a)
    assert flash(response) == GONE
    assert GONE in client.get(response["Location"]).content.decode()  # shown there (and so taken)
    conversation = _conversation(world, catalogue)
    response = client.post(chat_url(world.a, f"{conversation.pk}/rename/"), {"title": "Mine"})
    assert response.status_code == 302 and response["Location"] == chat_url(world.a)
    assert flash(response) == GONE


# --- a database held for longer than the busy timeout --------------------------------------


def test_a_database_held_past_the_busy_timeout_answers_503_or_try_again_never_500(
    world, catalogue, runtime, eager, shared_database
):
    """Not ordinary use (the tests above): a writer that keeps the database longer than the
    connections wait (a maintenance command, a backup, a `sqlite3` shell in a transaction)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's database-wide write lock; PostgreSQL locks rows (CI runs both)")
    conversation = _conversation(world, catalogue)
    member = signed_in(world.a.member)
    path = shared_database(busy_timeout=0.3)
    page = f"http://testserver{chat_url(world.a, f'{conversation.pk}/')}"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the writer that does not let go
    try:
        answers = on_a_thread(
            lambda: {
                "post": post_json(member, api(f"conversations/{conversation.pk}/messages/"), {"text": "Refunds?"}),
                "delete": member.delete(api(f"conversations/{conversation.pk}/")),
                "page": member.post(chat_url(world.a, f"{conversation.pk}/delete/"), HTTP_REFERER=page),
                "composer": member.post(chat_url(world.a, f"{conversation.pk}/messages/"), {"text": "Hi"}, **HX),
            }
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for name in ("post", "delete"):
        body = problem(answers[name], 503)
        assert (body["title"], body["detail"]) == (busy.TITLE, busy.DETAIL)
        assert answers[name]["Retry-After"] == str(busy.RETRY_AFTER_SECONDS)
    # Pages: the reason (no flash message: messages are kept in the session, a row that
    # cannot be written either), with the way back; the composer shows it in place.
    assert answers["page"].status_code == 503 and answers["page"]["Retry-After"] == str(busy.RETRY_AFTER_SECONDS)
    assert busy.MESSAGE in answers["page"].content.decode() and f'href="{page}"' in answers["page"].content.decode()
    assert answers["composer"].status_code == 503 and busy.MESSAGE in answers["composer"].content.decode()
    # Nothing was written, and once the database is free the same request goes through.
    response = on_a_thread(
        lambda: post_json(member, api(f"conversations/{conversation.pk}/messages/"), {"text": "Refunds?"})
    )
    assert response.status_code == 202, response.content
    assert on_a_thread(lambda: in_tenant(world.a, lambda: Message.objects.count())) == 2


def test_a_knowledge_search_during_a_turn_lets_other_writers_through(world, catalogue, shared_database, monkeypatch):
    """The agent's knowledge search (the worker, mid-turn) ranks in Python, and for a hybrid
    base waits for an embedding service: meanwhile the conversation can still be written to.
    On SQLite the ranking used to run in a transaction, i.e. under the write lock."""
    from agents.knowledge import retrieval

    kb, _, _ = make_knowledge_rows(world.a, "Alpha")
    conversation = _conversation(world, catalogue)
    actor = Actor(user=world.a.member, membership=world.a.memberships["member"])
    shared_database(busy_timeout=0.5)
    ranking, renamed = threading.Event(), threading.Event()
    rank = retrieval.ranking_for

    def slow_ranking(*args, **kwargs):
        ranking.set()
        assert renamed.wait(30)  # as long as the ranking takes, here: until the rename is done
        return rank(*args, **kwargs)

    monkeypatch.setattr(retrieval, "ranking_for", slow_ranking)
    hits = []

    def search():
        with tenant_context(world.a.tenant):
            hits.extend(retrieval.search("refund rule", [kb], k=3))

    def rename():
        assert ranking.wait(30)
        try:
            with tenant_context(world.a.tenant):
                found = services.access_conversation(actor, conversation.pk)
                services.rename_conversation(actor, found, "Renamed during the search")
        finally:
            renamed.set()

    errors = on_threads(search, rename)
    assert not errors, "\n".join(errors)
    assert [hit.chunk.knowledge_base_id for hit in hits] == [kb.pk]


# --- the hand-written SQL's direct path (portal.db.sql) -------------------------------------


def test_the_direct_sqlite_statements_wait_for_another_writer_like_the_orm(world, catalogue, shared_database):
    """portal.db.sql sends the chat path's statements to sqlite3 itself, on Django's own
    connection: the same busy timeout, and inside atomic() the same BEGIN IMMEDIATE, so a
    statement of its own and a transaction that reads before it writes both wait for the
    writer before them instead of failing at once with "database is locked"."""
    if connection.vendor != "sqlite":
        pytest.skip("the direct path is SQLite's (PostgreSQL goes through Django's cursor)")
    from django.db import transaction

    from portal.db import sql

    conversation = _conversation(world, catalogue)
    path = shared_database(busy_timeout=10)
    touch = "UPDATE agents_conversation SET title = %s WHERE tenant_id = %s AND id = %s"
    read = "SELECT title FROM agents_conversation WHERE tenant_id = %s AND id = %s"
    tenant = world.a.tenant.pk

    def hold_then_let_go():
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE agents_conversation SET title = 'held' WHERE id = ?", [conversation.pk])
        threading.Timer(0.5, lambda: (holder.execute("COMMIT"), holder.close())).start()

    def write():
        with tenant_context(world.a.tenant):
            assert sql._direct()
            hold_then_let_go()
            assert sql.run(touch, ["on its own", tenant, conversation.pk]) == 1
            hold_then_let_go()
            with transaction.atomic():
                assert sql.one(read, [tenant, conversation.pk]) is not None  # reads, then writes
                assert sql.run(touch, ["in a transaction", tenant, conversation.pk]) == 1
            return sql.one(read, [tenant, conversation.pk])[0]

    assert on_a_thread(write) == "in a transaction"
