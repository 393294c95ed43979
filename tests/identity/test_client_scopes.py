"""Each scope the API clients page offers does what its description there says, and no more.

A client's token (client_credentials) holding only that one scope reaches every operation the
description names, and is refused (403 problem) every operation that needs another scope:
the other scopes' reads, and every change and chat operation, which need a person. A scope
the page offers without a row here fails the first test.
"""

from __future__ import annotations

import re

import pytest

from agents.guardrails.models import GuardrailEvent
from tenants.context import tenant_context
from tenants.identity import scopes as scope_lib
from tenants.models import AuditLog
from tests.factories import client_token
from tests.identity.test_screens import signed_in, url
from tests.portal.helpers import problem

pytestmark = pytest.mark.django_db

A = "/api/v1/tenants/alpha/"

# scope → (the description the page shows, the operations it must reach)
WHAT_EACH_SCOPE_READS = {
    "tenant:read": (
        "Read the tenant, its tier, limits and entitlements",
        ["/api/v1/tenants/", A],
    ),
    "members:read": (
        "List members and invitations",
        [A + "members/", A + "members/{membership}/", A + "invitations/", A + "invitations/{invitation}/"],
    ),
    "audit:read": ("Read the tenant's audit log", [A + "audit-log/"]),
    "billing:read": (
        "Read usage, cost and invoices",
        [A + "usage/summary/", A + "usage/timeseries/", A + "usage/breakdown/?by=model", A + "invoices/"],
    ),
    "guardrails:read": (
        "Read the guardrail policy and its trigger events",
        [
            A + "guardrails/policy/",
            A + "guardrails/policy/override/",
            A + "guardrails/events/",
            A + "guardrails/events/{guardrail_event}/",
        ],
    ),
}

# Changes and chat: no client scope reaches any of them.
NEEDS_A_PERSON = [
    ("post", A + "invitations/", {"email": "new@alpha.test", "role": "member"}),
    ("patch", A + "members/{membership}/", {"role": "admin"}),
    ("delete", A + "members/{membership}/", None),
    ("post", A + "invitations/{invitation}/resend/", None),
    ("put", A + "guardrails/policy/override/", {}),
    ("post", A + "guardrails/events/{guardrail_event}/false-positive/", {"false_positive": True}),
    ("get", A + "agents/", None),
    ("get", A + "conversations/", None),
    ("post", A + "conversations/", {"agent": 1}),
    ("get", A + "knowledge-bases/", None),
    ("post", A + "knowledge-bases/", {"name": "KB"}),
]


@pytest.fixture
def objects(world):
    from tests.factories import make_invitation

    with tenant_context(world.a.tenant):
        event = GuardrailEvent.objects.create(stage="input", category="pii", rule="email", action="redact")
        AuditLog(tenant=world.a.tenant, action="member.invited", actor_email="admin@alpha.test").save()
    invitation = make_invitation(world.a.tenant, "invitee@alpha.test", invited_by=world.a.admin)
    return {
        "membership": world.a.memberships["member"].pk,
        "invitation": invitation.pk,
        "guardrail_event": event.pk,
    }


def call(client, token, method, path, objects, body=None):
    import json

    return getattr(client, method)(
        path.format(**objects),
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_the_page_offers_exactly_the_scopes_described_here_with_these_descriptions(client, world):
    page = signed_in(client, world.a.owner).get(url(world.a, "api-clients/")).content.decode()
    offered = set(re.findall(r'name="scopes" value="([^"]+)"', page))

    assert offered == set(WHAT_EACH_SCOPE_READS) == scope_lib.CLIENT_SCOPES
    for scope, (description, _) in WHAT_EACH_SCOPE_READS.items():
        assert scope_lib.SCOPES[scope] == description
        assert description.replace("'", "&#x27;") in page


@pytest.mark.parametrize("scope", sorted(WHAT_EACH_SCOPE_READS))
def test_a_client_with_only_this_scope_does_what_it_says_and_nothing_else(client, world, objects, scope):
    token = client_token(world.a.tenant, world.a.owner, {scope})

    for path in WHAT_EACH_SCOPE_READS[scope][1]:
        response = call(client, token, "get", path, objects)
        assert response.status_code == 200, (path, response.content)

    for other, (_, paths) in WHAT_EACH_SCOPE_READS.items():
        if other == scope:
            continue
        for path in paths:
            body = problem(call(client, token, "get", path, objects), 403)
            assert other in body["detail"], (path, body)

    for method, path, payload in NEEDS_A_PERSON:
        problem(call(client, token, method, path, objects, payload), 403)


@pytest.mark.parametrize("method,path,payload", NEEDS_A_PERSON)
def test_no_scope_at_all_lets_a_client_change_anything_or_chat(client, world, objects, method, path, payload):
    # A client created before the page limited scopes may hold every one: still no person.
    token = client_token(world.a.tenant, world.a.owner, set(scope_lib.SCOPES))

    body = problem(call(client, token, method, path, objects, payload), 403)

    assert "API client" in body["detail"]


@pytest.mark.parametrize("scope", ["agents:invoke", "kb:read", "members:write"])
def test_creating_a_client_with_a_scope_it_cannot_use_is_refused_with_why(world, scope):
    from tenants.identity import services
    from tenants.services import Actor, ServiceError

    owner = Actor(user=world.a.owner, membership=world.a.memberships["owner"])
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match=f"can only read.*{scope}"):
        services.create_api_client(owner, name="Too much", scopes=["tenant:read", scope])
