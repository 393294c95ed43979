"""Limits: budget, quota, per-user, concurrency and rate limits refuse a turn before
anything is written, answer 402/429 with Retry-After, and leave a ThrottleEvent."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Invocation, Message
from billing import limits
from billing.models import ModelPrice, MonthlyUsage, PriceBook, TenantBudget, ThrottleEvent, UsageDaily, UserLimit
from tenants.context import tenant_context
from tests.billing.helpers import actor, ask, ask_and_run, run

pytestmark = pytest.mark.django_db


def set_tier(side, **fields):
    tier = side.tenant.tier
    for name, value in fields.items():
        setattr(tier, name, value)
    tier.save()
    side.tenant.refresh_from_db()


@pytest.fixture
def pricey(db):
    """A price book at 1.00 per 1k tokens, so a turn's estimate is about 1.03 (budgets are in cents)."""
    book = PriceBook.objects.create(version=1, effective_from=timezone.now() - dt.timedelta(days=1))
    ModelPrice.objects.create(price_book=book, model_key="offline-small", per_1k_input=1, per_1k_output=1)
    return book


def estimate(catalogue, text="What is the refund window?") -> tuple[int, Decimal]:
    return limits.estimate_turn(catalogue.offering, text)


# The one name of each limit: the limits page, the dashboard and the overview use it, and so
# does every refusal, so a person can find the limit that stopped them (tests/billing/test_limit_names.py).
LIMIT_NAMES = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
    "concurrency": "concurrent sessions",
    "quota": "monthly token quota",
    "budget": "monthly budget",
    "user_rpm": "requests per minute",
    "user_tokens": "monthly token quota",
}


def refused(side, catalogue, text="What is the refund window?", role="member") -> limits.LimitExceeded:
    with pytest.raises(limits.LimitExceeded) as caught:
        ask(side, catalogue.helpdesk, text, role)
    assert_names_its_limit(caught.value)
    return caught.value


def assert_names_its_limit(refusal: limits.LimitExceeded) -> None:
    assert LIMIT_NAMES[refusal.kind] in refusal.messages[0].lower(), refusal.messages[0]


def written(side) -> tuple[int, int]:
    with tenant_context(side.tenant):
        return Message.objects.count(), Invocation.objects.count()


FEE = Decimal("100.00")


def bill_priced(
    side, *, price: str = "1.00", included: int = 0, overage_allowed: bool = True, fee: Decimal = FEE
) -> None:
    """A plan at a `fee` (default $100) whose every token past `included` bills `price` per 1k."""
    set_tier(
        side,
        monthly_price=fee,
        included_tokens=included,
        overage_allowed=overage_allowed,
        overage_price_per_1k_tokens=Decimal(price),
        concurrent_sessions=10,
    )


def budget_for(tokens: int, price: str = "1.00") -> Decimal:
    """The fee plus the overage of `tokens` (none included), rounded up to the cent."""
    return FEE + (Decimal(tokens) * Decimal(price) / 1000).quantize(Decimal("0.01"), rounding="ROUND_UP")


def test_the_budget_stops_the_turn_that_would_take_the_bill_past_it_and_records_why(world, catalogue, runtime, pricey):
    tokens, cost = estimate(catalogue)
    bill_priced(world.a)
    # Room in the bill for two estimates' overage (rounded up to the cent: less than a third).
    budget = budget_for(2 * tokens)
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=budget)
    # The price book's cost of three turns is far below the budget: the bill, not the cost, decides.
    assert 3 * cost < budget
    ask(world.a, catalogue.helpdesk)
    ask(world.a, catalogue.helpdesk)
    before = written(world.a)
    refusal = refused(world.a, catalogue)
    assert (refusal.status, refusal.code, refusal.kind) == (402, "budget_exceeded", "budget")
    message = str(refusal.messages[0])
    assert f"monthly budget (${budget:,.2f})" in message
    # In the money the tenant is billed: nothing used yet, so the fee and no overage.
    assert "bill is $100.00 so far (plan fee $100.00 + token overage $0.00)" in message
    assert "has no room for this answer" in message
    assert refusal.retry_after and refusal.retry_after > 0
    assert written(world.a) == before  # nothing of the refused turn was written
    with tenant_context(world.a.tenant):
        throttle = ThrottleEvent.objects.get()
        daily = UsageDaily.objects.get(throttled_requests=1)
        month = MonthlyUsage.objects.get(user_key=0)
    assert (throttle.kind, throttle.status, throttle.user_id) == ("budget", 402, world.a.member.pk)
    assert throttle.model_key == "offline-small" and throttle.agent_slug == "helpdesk"
    assert throttle.message == refusal.messages[0] and throttle.message.startswith("Your organisation's monthly budget")
    assert daily.turns == 0
    assert month.tokens_reserved == 2 * tokens  # the refused turn's reservation rolled back


def test_a_budget_on_the_bill_is_not_reached_by_the_price_books_cost(world, catalogue, runtime, pricey):
    # The price book prices a turn at ~$1.03; the bill of a turn within the included tokens
    # is $0 over the fee. A budget at the fee therefore admits turns while tokens stay included.
    tokens, cost = estimate(catalogue)
    bill_priced(world.a, included=3 * tokens)
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=FEE)
    for _ in range(3):
        assert ask(world.a, catalogue.helpdesk).status == "queued"
    refusal = refused(world.a, catalogue)  # a fourth would bill overage past the fee
    assert refusal.code == "budget_exceeded"


def test_tenant_b_is_not_affected_by_tenant_a_budget(world, catalogue, runtime):
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("0"))  # below the fee: an older row, a hard stop
    refused(world.a, catalogue)
    assert ask(world.b, catalogue.helpdesk).status == "queued"


def test_finished_turns_free_the_budget_their_estimate_held(world, catalogue, runtime, pricey):
    tokens, cost = estimate(catalogue)
    bill_priced(world.a)
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=budget_for(tokens * 3 // 2))
    runtime.events = [{"type": "delta", "text": "Yes."}, {"type": "usage", "input_tokens": 10, "output_tokens": 10}]
    invocation = ask(world.a, catalogue.helpdesk)
    refused(world.a, catalogue)  # the first turn's estimate holds the budget
    run(world.a, invocation)  # real usage (20 tokens, $0.02 of overage) is far below the 1024-token output estimate
    assert ask(world.a, catalogue.helpdesk).status == "queued"


def test_without_overage_a_budget_adds_nothing_to_the_quota(world, catalogue, runtime, pricey):
    tokens, cost = estimate(catalogue)
    # A $1 plan and a $1 budget: less than the price book's cost of one turn (~$1.03), but
    # the bill can never pass the fee.
    bill_priced(world.a, included=2 * tokens, overage_allowed=False, fee=Decimal("1.00"))
    assert cost > Decimal("1.00")
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("1.00"))
    ask(world.a, catalogue.helpdesk)
    ask(world.a, catalogue.helpdesk)
    assert refused(world.a, catalogue).code == "quota_exceeded"  # the quota, not the budget


def test_free_overage_never_reaches_a_budget(world, catalogue, runtime, pricey):
    bill_priced(world.a, price="0", fee=Decimal("1.00"))
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("1.00"))  # below one turn's price-book cost
    for _ in range(4):
        assert ask(world.a, catalogue.helpdesk).status == "queued"


def test_the_budget_and_the_quota_each_refuse_in_their_own_words(world, catalogue, runtime, pricey):
    tokens, _ = estimate(catalogue)
    bill_priced(world.a)
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=budget_for(tokens))
    ask(world.a, catalogue.helpdesk)
    assert refused(world.a, catalogue).code == "budget_exceeded"
    # Overage off and a quota of 1.5 turns: the quota (overage now impossible) refuses first.
    set_tier(world.a, overage_allowed=False, included_tokens=tokens * 3 // 2)
    assert refused(world.a, catalogue).code == "quota_exceeded"


def test_the_token_quota_refuses_when_overage_is_not_allowed(world, catalogue, runtime):
    tokens, _ = estimate(catalogue)
    set_tier(world.a, included_tokens=tokens, overage_allowed=False)
    ask(world.a, catalogue.helpdesk)
    refusal = refused(world.a, catalogue)
    assert (refusal.status, refusal.code) == (402, "quota_exceeded")
    set_tier(world.a, overage_allowed=True)
    assert ask(world.a, catalogue.helpdesk).status == "queued"


def test_per_user_monthly_tokens_stop_that_user_only(world, catalogue, runtime):
    tokens, _ = estimate(catalogue)
    with tenant_context(world.a.tenant):
        UserLimit.objects.create(user=world.a.member, tokens_per_month=tokens)
    ask(world.a, catalogue.helpdesk)
    refusal = refused(world.a, catalogue)
    assert (refusal.status, refusal.code) == (402, "user_token_limit")
    assert ask(world.a, catalogue.helpdesk, role="admin").status == "queued"


def test_per_user_requests_per_minute(world, catalogue, runtime, limiter):
    with tenant_context(world.a.tenant):
        UserLimit.objects.create(user=world.a.member, requests_per_minute=2)
    ask(world.a, catalogue.helpdesk)
    ask(world.a, catalogue.helpdesk)
    refusal = refused(world.a, catalogue)
    assert (refusal.status, refusal.kind) == (429, "user_rpm")
    assert 1 <= refusal.retry_after <= 30
    assert ask(world.a, catalogue.helpdesk, role="admin").status == "queued"


def test_tenant_requests_per_minute_from_the_tier(world, catalogue, runtime, limiter):
    set_tier(world.a, requests_per_minute=3)
    for _ in range(3):
        ask(world.a, catalogue.helpdesk)
    refusal = refused(world.a, catalogue)
    assert (refusal.status, refusal.kind, refusal.code) == (429, "rpm", "rate_limited")
    assert "Your organisation has reached its limit of requests per minute (3)." in refusal.messages[0]
    assert 1 <= refusal.retry_after <= 20  # one request's interval (20 s) at 3/min


def test_tokens_per_minute_from_the_tier(world, catalogue, runtime, limiter):
    tokens, _ = estimate(catalogue)
    set_tier(world.a, tokens_per_minute=tokens * 2)
    ask(world.a, catalogue.helpdesk)
    ask(world.a, catalogue.helpdesk)
    assert refused(world.a, catalogue).kind == "tpm"


def long_conversation(side, agent, *, pastes: int = 25):
    """A conversation of `pastes` exchanges (a 16,000-character paste, a short answer) and a
    failed and a blocked answer, none of which the runtime is sent beyond its history window."""
    from agents import services

    with tenant_context(side.tenant):
        conversation = services.start_conversation(actor(side), agent.pk)
        for _ in range(pastes):
            Message.objects.create(conversation=conversation, role="user", content="x" * 16_000)
            Message.objects.create(conversation=conversation, role="assistant", content="Done.", status="done")
        Message.objects.create(conversation=conversation, role="assistant", content="y" * 50_000, status="failed")
        Message.objects.create(conversation=conversation, role="assistant", content="z" * 50_000, status="blocked")
    return conversation


def post(side, conversation, text="Summarise the last paste."):
    from agents import services

    with tenant_context(side.tenant):
        return services.post_message(actor(side), conversation, text)


def test_the_estimate_counts_the_history_the_runtime_is_sent(world, catalogue, runtime, limiter):
    from agents.runtime_gateway import HISTORY_MESSAGES

    set_tier(world.a, tokens_per_minute=100_000)
    conversation = long_conversation(world.a, catalogue.helpdesk)
    text = "Summarise the last paste."
    # The last HISTORY_MESSAGES answered messages: half pastes, half "Done."
    sent_chars = HISTORY_MESSAGES // 2 * (16_000 + len("Done."))
    with tenant_context(world.a.tenant):
        tokens, _ = limits.estimate_turn(catalogue.offering, text, conversation)
    assert tokens == limits.estimate_tokens(len(text) + sent_chars) + limits.MAX_OUTPUT_TOKENS
    assert post(world.a, conversation, text).status == "queued"


def reads_knowledge(side, *chunk_sizes: int, feature: bool = True) -> list:
    """The tenant's plan has knowledge bases (or not), and it has bases of these chunk sizes."""
    from agents.knowledge.models import KnowledgeBase

    set_tier(side, default_features=["chat", "knowledge_bases"] if feature else ["chat"], concurrent_sessions=10)
    with tenant_context(side.tenant):
        return [KnowledgeBase.objects.create(name=f"Base {size}", chunk_size=size) for size in chunk_sizes]


def with_passages(text: str, chunk_size: int) -> int:
    """The estimate of `text` with room for DEFAULT_K passages of `chunk_size` characters."""
    from agents.runtime.knowledge import DEFAULT_K

    allowance = limits.RETRIEVAL_PREAMBLE_CHARS + DEFAULT_K * (chunk_size + limits.PASSAGE_FRAME_CHARS)
    return limits.estimate_tokens(len(text) + allowance) + limits.MAX_OUTPUT_TOKENS


def test_the_estimate_reserves_room_for_the_passages_the_agent_retrieves(world, catalogue, runtime):
    reads_knowledge(world.a, 800, 2000)
    conversation = post_conversation(world.a, catalogue.helpdesk)
    text = "Summarise the last paste."
    with tenant_context(world.a.tenant):
        tokens, _ = limits.estimate_turn(catalogue.offering, text, conversation)
    # The agent reads every base (none chosen): room for passages of the largest chunks.
    assert tokens == with_passages(text, 2000)
    assert tokens > limits.estimate_tokens(len(text)) + limits.MAX_OUTPUT_TOKENS + 2_500
    assert post(world.a, conversation, text).status == "queued"
    with tenant_context(world.a.tenant):
        assert MonthlyUsage.objects.get(user_key=0).tokens_reserved == tokens


def test_the_estimate_counts_the_chunks_of_the_bases_the_agent_reads(world, catalogue, runtime):
    from agents.knowledge.models import AgentKnowledge

    small, _large = reads_knowledge(world.a, 800, 2000)
    with tenant_context(world.a.tenant):
        AgentKnowledge.objects.create(agent=catalogue.helpdesk, knowledge_base=small)
    conversation = post_conversation(world.a, catalogue.helpdesk)
    text = "Summarise the last paste."
    with tenant_context(world.a.tenant):
        tokens, _ = limits.estimate_turn(catalogue.offering, text, conversation)
    assert tokens == with_passages(text, 800)
    post(world.a, conversation, text)
    with tenant_context(world.a.tenant):
        assert MonthlyUsage.objects.get(user_key=0).tokens_reserved == tokens


@pytest.mark.parametrize("feature, bases", [(True, ()), (False, (2000,))])
def test_the_estimate_has_no_retrieval_allowance_when_nothing_is_retrieved(world, catalogue, runtime, feature, bases):
    reads_knowledge(world.a, *bases, feature=feature)
    conversation = post_conversation(world.a, catalogue.helpdesk)
    text = "Summarise the last paste."
    with tenant_context(world.a.tenant):
        tokens, _ = limits.estimate_turn(catalogue.offering, text, conversation)
    assert tokens == limits.estimate_tokens(len(text)) + limits.MAX_OUTPUT_TOKENS
    post(world.a, conversation, text)
    with tenant_context(world.a.tenant):
        assert MonthlyUsage.objects.get(user_key=0).tokens_reserved == tokens


def test_retrieval_cannot_take_the_token_quota_past_its_limit(world, catalogue, runtime):
    text = "Summarise the last paste."
    # Room for the message and the answer, not for the passages the agent would retrieve.
    without_passages = limits.estimate_tokens(len(text)) + limits.MAX_OUTPUT_TOKENS
    for side in (world.a, world.b):
        set_tier(side, included_tokens=without_passages, overage_allowed=False)
    reads_knowledge(world.a, 1200)
    reads_knowledge(world.b)  # entitled, but no base: nothing to retrieve
    with pytest.raises(limits.LimitExceeded) as caught:
        post(world.a, post_conversation(world.a, catalogue.helpdesk), text)
    assert (caught.value.status, caught.value.code) == (402, "quota_exceeded")
    assert post(world.b, post_conversation(world.b, catalogue.helpdesk), text).status == "queued"


def post_conversation(side, agent):
    from agents import services

    with tenant_context(side.tenant):
        return services.start_conversation(actor(side), agent.pk)


def test_a_turn_larger_than_a_minutes_tokens_is_refused_with_what_to_do_not_a_retry_time(
    world, catalogue, runtime, limiter
):
    conversation = long_conversation(world.a, catalogue.helpdesk, pastes=5)
    set_tier(world.a, tokens_per_minute=10_000)  # the history alone is 20,000 tokens
    for _ in range(2):  # the same answer every time: waiting does not help
        with pytest.raises(limits.LimitExceeded) as caught:
            post(world.a, conversation)
        refusal = caught.value
        assert_names_its_limit(refusal)
        assert (refusal.status, refusal.code, refusal.kind, refusal.retry_after) == (413, "turn_too_large", "tpm", None)
        assert "Start a new conversation" in refusal.messages[0]
        assert "Try again" not in refusal.messages[0]
    assert written(world.a) == (5 * 2 + 2, 0)  # nothing written
    with tenant_context(world.a.tenant):
        assert ThrottleEvent.objects.filter(kind="tpm", status=413).count() == 2
    # A new conversation still gets through the same minute's allowance.
    assert ask(world.a, catalogue.helpdesk).status == "queued"


def test_the_api_refuses_a_turn_larger_than_a_minutes_tokens_with_413_and_no_retry_after(
    client, world, catalogue, runtime
):
    conversation = long_conversation(world.a, catalogue.helpdesk, pastes=5)
    set_tier(world.a, tokens_per_minute=10_000)
    client.force_login(world.a.member)
    response = client.post(
        f"/api/v1/tenants/{world.a.tenant.slug}/conversations/{conversation.pk}/messages/",
        {"text": "Summarise."},
        content_type="application/json",
    )
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert not response.has_header("Retry-After")
    assert response.json()["code"] == "turn_too_large"


def test_the_limiter_never_promises_a_retry_to_a_request_larger_than_its_window(world, limiter):
    bucket = limits.Bucket("tpm", "tpm", limit=1000, quantity=1001)
    with tenant_context(world.a.tenant):
        refused_bucket, retry_after = limits.take(world.a.tenant.pk, [bucket])
    refusal = limits._rate_refusal(refused_bucket, retry_after)
    assert (refusal.status, refusal.code, refusal.retry_after) == (413, "turn_too_large", None)


def test_retry_after_is_the_wait_for_every_limit_not_only_the_first_that_refuses(world, limiter):
    """Requests per minute free up in a second, tokens per minute in half a minute: a client
    told "1 s" would come back at once to be refused again (by the other limit)."""
    rpm = limits.Bucket("rpm", "rpm", limit=60, quantity=1)
    tpm = limits.Bucket("tpm", "tpm", limit=1000, quantity=500)
    with tenant_context(world.a.tenant):
        for _ in range(58):
            assert limits.take(world.a.tenant.pk, [rpm]) == (None, 0.0)
        for _ in range(2):
            assert limits.take(world.a.tenant.pk, [rpm, tpm]) == (None, 0.0)
        refused_bucket, retry_after = limits.take(world.a.tenant.pk, [rpm, tpm])
    refusal = limits._rate_refusal(refused_bucket, retry_after)
    assert 29 <= refusal.retry_after <= 30
    assert (refusal.status, refusal.kind) == (429, "tpm")


def test_concurrent_sessions_count_unfinished_turns(world, catalogue, runtime):
    set_tier(world.a, concurrent_sessions=2)
    first = ask(world.a, catalogue.helpdesk)
    ask(world.a, catalogue.helpdesk)
    refusal = refused(world.a, catalogue)
    assert (refusal.status, refusal.kind) == (429, "concurrency")
    run(world.a, first)
    assert ask(world.a, catalogue.helpdesk).status == "queued"


def test_a_retry_is_admitted_like_a_new_message(world, catalogue, runtime):
    from agents import services
    from agents.runtime_gateway import RuntimeRejected

    runtime.events = [RuntimeRejected("nope")]
    failed = ask_and_run(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("0"))
        with pytest.raises(limits.LimitExceeded):
            services.retry_turn(actor(world.a), Invocation.objects.get(pk=failed.pk))
        assert ThrottleEvent.objects.filter(kind="budget").count() == 1


def test_the_api_answers_a_limit_with_problem_json_and_retry_after(client, world, catalogue, runtime):
    set_tier(world.a, requests_per_minute=1)
    client.force_login(world.a.member)
    base = f"/api/v1/tenants/{world.a.tenant.slug}/conversations/"
    statuses = []
    for _ in range(2):
        conversation = client.post(base, {"agent": catalogue.helpdesk.pk}, content_type="application/json").json()
        response = client.post(f"{base}{conversation['id']}/messages/", {"text": "Hi"}, content_type="application/json")
        statuses.append(response.status_code)
    assert statuses == [202, 429]
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) >= 1
    body = response.json()
    assert (body["status"], body["code"], body["limit"]) == (429, "rate_limited", "rpm")
    assert "limit of requests per minute (1)" in body["detail"]


def test_the_composer_shows_the_reason_with_429_and_retry_after(client, world, catalogue, runtime):
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("0"))
    client.force_login(world.a.member)
    with tenant_context(world.a.tenant):
        from agents import services

        conversation = services.start_conversation(actor(world.a), catalogue.helpdesk.pk)
    response = client.post(
        f"/t/{world.a.tenant.slug}/chat/{conversation.pk}/messages/", {"text": "Hi"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 402
    assert int(response["Retry-After"]) >= 1
    assert "monthly budget" in response.content.decode()
    assert "composer-alert" in response.content.decode()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the grants are PostgreSQL's")
def test_the_app_role_cannot_update_or_delete_usage_events(world, catalogue, runtime):
    from django.db import ProgrammingError, transaction

    ask_and_run(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        for statement in ("UPDATE billing_usageevent SET cost = 0", "DELETE FROM billing_usageevent"):
            with pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(statement)


def test_the_api_retry_answers_a_limit_with_402(client, world, catalogue, runtime):
    from agents.runtime_gateway import RuntimeRejected

    runtime.events = [RuntimeRejected("nope")]
    failed = ask_and_run(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("0"))
    client.force_login(world.a.member)
    response = client.post(f"/api/v1/tenants/{world.a.tenant.slug}/invocations/{failed.pk}/retry/")
    assert response.status_code == 402
    assert response.json()["code"] == "budget_exceeded"
    assert int(response["Retry-After"]) >= 1


def test_a_thread_never_gets_the_redis_client_without_its_script(monkeypatch):
    # The rate limiter's first calls in a process can come from several threads at once;
    # the client and its GCRA script are published together, so none gets one without the other.
    import redis

    registering, release = threading.Event(), threading.Event()

    class Client:
        def register_script(self, text):
            if threading.current_thread().name == "first-caller":
                registering.set()
                release.wait(10)
            return object()

    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kwargs: Client()))
    monkeypatch.setattr(limits, "_redis_and_script", None)
    first = threading.Thread(target=limits._redis, name="first-caller")
    first.start()
    try:
        assert registering.wait(10)
        client, script = limits._redis()
    finally:
        release.set()
        first.join(10)
    assert isinstance(client, Client) and script is not None
