"""The cross-tenant check is no oracle for the names of the platform's other customers.

The output guard blocks an answer that names another tenant, so a leak of another
customer's data stops before it is shown. Were it to fire on a name the tenant's own
side supplied, anyone could learn whether a name is a customer of the platform by
typing it (in the console, or in a chat whose agent repeats the question): the block
would answer "yes". So the check ignores what the person wrote in the conversation
(in any case, spacing or punctuation, or backwards), the instructions of the tenant's
own agent and the tenant's own documents, and the console shows nothing of it. Every
test here compares another tenant's name ("Bravo Inc") with a name that is nobody's.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import runtime_gateway
from agents.guardrails import enforce, services
from agents.guardrails.models import GuardrailEvent
from agents.models import Agent, Invocation
from tenants.context import all_tenants, tenant_context
from tests.agents.helpers import make_turn
from tests.agents.test_chat import HX, start
from tests.guardrails.test_enforcement import deltas, send, turn
from tests.knowledge.helpers import actor_for, entitle, ingest, make_kb

pytestmark = pytest.mark.django_db

CUSTOMER, NOBODY = "Bravo Inc", "Zulu Widgets"
CONSOLE = "/t/alpha/guardrails/try/"


@pytest.fixture
def chatting(client, world, catalogue, runtime, eager):
    client.force_login(world.a.member)
    return start(client, world.a, catalogue.helpdesk)


def console_result(client, text: str, stage: str) -> str:
    response = client.post(CONSOLE, {"text": text, "stage": stage}, **HX)
    assert response.status_code == 200
    body = response.content.decode()
    result = body[body.index('id="try-result"') :]
    return re.sub(r"in [0-9.]+ ms", "in … ms", result).replace(text, "…")


# --- the try-it console ---------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["input", "output"])
@pytest.mark.parametrize("wording", ["{name}", "As {name} told us, refunds take 30 days.", "{name} ({name})"])
def test_the_console_answers_the_same_for_another_customers_name_and_a_name_that_is_nobodys(
    client, world, stage, wording
):
    client.force_login(world.a.admin)

    customer = console_result(client, wording.format(name=CUSTOMER), stage)
    nobody = console_result(client, wording.format(name=NOBODY), stage)

    assert customer == nobody
    assert "Would pass unchanged" in customer and "Cross-tenant" not in customer


def test_the_console_says_why_it_never_shows_the_cross_tenant_check(client, world):
    client.force_login(world.a.admin)

    body = client.get("/t/alpha/guardrails/").content.decode()

    assert "ignores what the person wrote" in body


# --- chat -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [CUSTOMER, NOBODY])
def test_the_offline_agent_repeats_a_name_the_person_asked_about_whoever_it_belongs_to(
    client, world, catalogue, eager, monkeypatch, django_capture_on_commit_callbacks, name
):
    """No fake: the in-process runtime's offline model restates the question in its answer."""
    monkeypatch.setattr(runtime_gateway, "_local_client", None)  # its key cache outlives a test's keys
    client.force_login(world.a.member)
    conversation = start(client, world.a, catalogue.helpdesk)

    send(client, world, conversation, f"What do you know about {name}?", django_capture_on_commit_callbacks)

    invocation, _asked, answer, events = turn(world)
    assert (invocation.status, events) == ("done", [])
    assert name in answer.content


WRITTEN = {
    "as it is": lambda name: f"Tell me about {name}.",
    "in capitals": lambda name: f"TELL ME ABOUT {name.upper()}",
    "letter by letter": lambda name: "what about " + " ".join(name.lower()) + "?",
    "punctuated": lambda name: "And " + ".".join(name.replace(" ", "-")) + "?",
    "backwards": lambda name: f"Spell this backwards: {name[::-1]}",
    "with accents": lambda name: "Who is " + name.translate(str.maketrans("aeiou", "áéíóú")) + "?",
}


@pytest.mark.parametrize("form", WRITTEN)
@pytest.mark.parametrize("name", [CUSTOMER, NOBODY])
def test_an_answer_may_repeat_a_name_the_person_wrote_in_any_form(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, form, name
):
    runtime.events = deltas("You asked about ", f"{name}; ", "I know nothing about it.")

    send(client, world, chatting, WRITTEN[form](name), django_capture_on_commit_callbacks)

    invocation, _asked, answer, events = turn(world)
    assert (invocation.status, events) == ("done", [])
    assert answer.content == f"You asked about {name}; I know nothing about it."


def test_a_name_the_person_wrote_earlier_in_the_conversation_counts(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    send(client, world, chatting, "I am comparing us with bravo inc.", django_capture_on_commit_callbacks)
    runtime.events = deltas("Bravo Inc ", "is not something I know about.")

    send(client, world, chatting, "So what do you know about them?", django_capture_on_commit_callbacks)

    with tenant_context(world.a.tenant):
        latest = Invocation.objects.select_related("assistant_message").order_by("-queued_at").first()
        assert not GuardrailEvent.objects.exists()
    assert latest.status == "done" and latest.assistant_message.content.startswith("Bravo Inc")


def test_a_name_in_the_tenants_own_documents_is_not_a_leak(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    entitle(world.a.tenant)
    ingest(world.a, make_kb(world.a), "partners.md", "# Partners\n\nOur reseller in Spain is BRAVO\nInc.")
    runtime.events = deltas("Our reseller in Spain is ", "Bravo Inc.")

    send(client, world, chatting, "Who sells for us in Spain?", django_capture_on_commit_callbacks)

    invocation, _asked, _answer, events = turn(world)
    assert (invocation.status, events) == ("done", [])


def test_another_tenants_documents_are_not_this_tenants_words(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    entitle(world.a.tenant, world.b.tenant)
    ingest(world.b, make_kb(world.b), "about.md", "# About us\n\nBravo Inc sells widgets in Spain.")
    runtime.events = deltas("Bravo Inc ", "sells widgets in Spain.")

    send(client, world, chatting, "Who sells widgets in Spain?", django_capture_on_commit_callbacks)

    assert turn(world)[0].status == "blocked"


def test_a_name_in_the_instructions_of_the_tenants_own_agent_is_not_a_leak(
    client, world, catalogue, runtime, eager, django_capture_on_commit_callbacks
):
    with all_tenants("test: the helpdesk becomes alpha's own agent"):
        Agent.unscoped.filter(pk=catalogue.helpdesk.pk).update(
            owner_tenant=world.a.tenant, instructions="Refer resellers to Bravo Inc."
        )
    client.force_login(world.a.member)
    conversation = start(client, world.a, catalogue.helpdesk)
    runtime.events = deltas("Please ask ", "Bravo Inc.")

    send(client, world, conversation, "Where do resellers go?", django_capture_on_commit_callbacks)

    invocation, _asked, _answer, events = turn(world)
    assert (invocation.status, events) == ("done", [])


# --- what still stops an answer ---------------------------------------------------------------


def test_a_shared_agents_instructions_are_not_the_tenants_words(
    client, world, catalogue, runtime, eager, django_capture_on_commit_callbacks
):
    with all_tenants("test: platform instructions that name a customer"):
        Agent.unscoped.filter(pk=catalogue.helpdesk.pk).update(instructions="Refer resellers to Bravo Inc.")
    client.force_login(world.a.member)
    conversation = start(client, world.a, catalogue.helpdesk)
    runtime.events = deltas("Please ask ", "Bravo Inc.")

    send(client, world, conversation, "Where do resellers go?", django_capture_on_commit_callbacks)

    assert turn(world)[0].status == "blocked"


def test_another_customers_name_nobody_here_wrote_still_stops_the_answer_and_its_context_is_not_kept(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    runtime.events = deltas("According to Bravo Inc's ", "board minutes, the merger closes in May.")

    send(client, world, chatting, "Any news about Charlie Widgets?", django_capture_on_commit_callbacks)

    invocation, _asked, answer, [event] = turn(world)
    assert (invocation.status, event.category, event.action) == ("blocked", "cross_tenant", "block")
    assert answer.content == "The answer was withheld by your organisation's guardrails."
    # The words around the name may be the other customer's data: the event keeps none.
    assert event.excerpt == "[OTHER_TENANT]"


def test_writing_another_customers_name_does_not_let_its_canary_through(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    canary = services.canary_for(world.b.tenant)
    runtime.events = deltas("Bravo Inc's handbook says ", f"{canary}.")

    send(client, world, chatting, "What does Bravo Inc's handbook say?", django_capture_on_commit_callbacks)

    invocation, _asked, _answer, [event] = turn(world)
    assert (invocation.status, event.category) == ("blocked", "cross_tenant")
    assert canary not in event.excerpt


def guard_work(world, catalogue, question: str, answer: str) -> tuple[list[str], bool]:
    """The statements the output guard runs over a turn's answer (the policy and the markers
    read beforehand, as every turn reads them), and whether it blocked the answer."""
    _conversation, _answer, queued = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question)
    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.select_related("agent", "user_message").get(pk=queued.pk)
        guard = enforce.OutputGuard(world.a.tenant, invocation)
        services.other_tenant_markers(guard.effective.tenants_gen)
        with CaptureQueriesContext(connection) as queries:
            verdicts = [guard.check(answer[: len(answer) // 2]), guard.check(answer), guard.final(answer)]
    blocked = any(verdict is not None and verdict.blocked for verdict in verdicts)
    # The same statements, whatever ids and values they were run with.
    return [re.sub(r"\d+|'[^']*'", "?", query["sql"]) for query in queries.captured_queries], blocked


def test_the_guard_does_the_same_work_for_a_name_from_the_tenants_documents_whoever_it_belongs_to(world, catalogue):
    # The time the output guardrails took is shown under the answer and in its trace. A name
    # the tenant's documents hold is no leak; finding it must not cost more when it is
    # another customer's (that extra time would answer "is this name a customer?").
    entitle(world.a.tenant)
    ingest(world.a, make_kb(world.a), "partners.md", f"# Partners\n\nIn Spain: {CUSTOMER}. In Chile: {NOBODY}.")
    guard_work(world, catalogue, "Who sells for us?", "Nobody yet.")  # any turn before: the documents are read

    customer, customer_blocked = guard_work(world, catalogue, "Who sells in Spain?", f"In Spain: {CUSTOMER}.")
    nobody, nobody_blocked = guard_work(world, catalogue, "Who sells in Chile?", f"In Chile: {NOBODY}.")

    assert (customer_blocked, nobody_blocked) == (False, False)
    assert customer == nobody


def test_the_guard_reads_the_tenants_documents_at_the_same_point_of_every_turn(world, catalogue):
    # Whether the answer names anyone or not, the first check of a turn reads the same.
    entitle(world.a.tenant)
    ingest(world.a, make_kb(world.a), "partners.md", f"# Partners\n\nIn Spain: {CUSTOMER}.")
    guard_work(world, catalogue, "Who sells for us?", "Nobody yet.")

    named, _ = guard_work(world, catalogue, "Who sells in Spain?", f"In Spain: {CUSTOMER}.")
    plain, _ = guard_work(world, catalogue, "What is the refund window?", "Thirty days, from delivery.")

    assert named == plain


def latest_status(world) -> str:
    with tenant_context(world.a.tenant):
        return Invocation.objects.order_by("-queued_at", "-id").values_list("status", flat=True).first()


def test_a_document_uploaded_or_deleted_between_turns_counts_at_once(
    client, world, catalogue, runtime, eager, django_capture_on_commit_callbacks
):
    from agents.knowledge import services as knowledge

    def ask_in_a_new_conversation() -> str:
        # A new conversation each time: an answer that passed is history, and so the
        # tenant's own words, for the next turn of its conversation.
        send(client, world, start(client, world.a, catalogue.helpdesk), "Who sells for us in Spain?", capture)
        return latest_status(world)

    capture = django_capture_on_commit_callbacks
    client.force_login(world.a.member)
    entitle(world.a.tenant)
    kb = make_kb(world.a)
    runtime.events = deltas("Our reseller in Spain is ", "Bravo Inc.")
    assert ask_in_a_new_conversation() == "blocked"  # nobody here wrote it yet

    document = ingest(world.a, kb, "partners.md", "# Partners\n\nOur reseller in Spain is Bravo Inc.")
    assert ask_in_a_new_conversation() == "done"

    with tenant_context(world.a.tenant):
        knowledge.delete_document(actor_for(world.a), document)
    assert ask_in_a_new_conversation() == "blocked"


@pytest.mark.parametrize("name", [CUSTOMER, NOBODY])
def test_the_guard_does_the_same_work_for_a_name_the_person_wrote_whoever_it_belongs_to(world, catalogue, name):
    # The time the output guardrails took is shown under every answer: finding another
    # customer's name (and then seeing the person wrote it) must cost no extra query.
    _conversation, _answer, queued = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, f"About {name}?")
    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.select_related("agent", "user_message").get(pk=queued.pk)
        guard = enforce.OutputGuard(world.a.tenant, invocation)
        # The policy and the markers are looked up the same way for both: out of the count.
        services.other_tenant_markers(guard.effective.tenants_gen)
        with CaptureQueriesContext(connection) as queries:
            verdicts = [guard.check(f"You asked about {name}"), guard.final(f"You asked about {name}.")]

    assert verdicts[0] is None and not verdicts[1].blocked
    # As for any turn: the history the runtime was sent (turn_facts); the tenant has no
    # knowledge bases, so no documents the agent could have read.
    assert len(queries) == 1


def test_a_tool_call_may_carry_a_name_the_person_wrote(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    # A tool call's arguments are shown and stored with the answer, so they pass the same
    # cross-tenant check, with the same exemption: otherwise a model that puts the name the
    # person asked about into a search call would make the call an oracle.
    runtime.events = [{"type": "tool_call", "name": "search", "id": "call-1", "input": {"query": CUSTOMER}}]
    runtime.events += deltas("Nothing found.")
    send(client, world, chatting, f"Search for {CUSTOMER}", django_capture_on_commit_callbacks)

    invocation, _asked, answer, events = turn(world)
    assert (invocation.status, events) == ("done", [])
    assert answer.tool_calls == [{"name": "search", "id": "call-1", "input": {"query": CUSTOMER}}]


def test_a_tool_call_carrying_another_customers_name_nobody_here_wrote_is_blocked(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    runtime.events = [{"type": "tool_call", "name": "search", "id": "call-1", "input": {"query": CUSTOMER}}]
    runtime.events += deltas("Nothing found.")
    send(client, world, chatting, "Search for our biggest competitor", django_capture_on_commit_callbacks)

    invocation, _asked, answer, events = turn(world)
    assert answer.tool_calls == [{"name": "search", "id": "call-1", "input": {"query": enforce.BLOCKED_VALUE}}]
    assert [event.category for event in events] == ["cross_tenant"]


@pytest.mark.parametrize(
    "question",
    [
        "Is Bravo Incubator hiring?",
        "Bravo. Incidentally, who sells for us?",
        "What does cni ovarbx mean backwards?",
    ],
)
def test_a_name_counts_as_written_only_as_whole_words_not_inside_longer_ones(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, question
):
    # "Bravo Incubator" and "Bravo. Incidentally" hold the letters of "Bravo Inc" in a row, but
    # nobody wrote that name: an answer naming that customer is a leak like any other.
    runtime.events = deltas("Bravo Inc ", "is our biggest customer in Spain.")

    send(client, world, chatting, question, django_capture_on_commit_callbacks)

    invocation, _asked, _answer, events = turn(world)
    assert (invocation.status, [event.category for event in events]) == ("blocked", ["cross_tenant"])
