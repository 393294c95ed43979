"""Every API operation keeps the contract its OpenAPI schema publishes.

Schemathesis reads /api/schema/ and generates requests for every operation, valid and
not, and checks each answer: never a 500, a status code the schema documents, a body
that matches the documented schema, and the documented content type. A new API route
is covered without a line here, as tests/isolation covers every route for isolation.

The requests go in-process through the WSGI app (the test's own database transaction),
as the tenant's owner, whose role reaches every operation, on a tier with every feature.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tenants import entitlements
from tenants.identity.tokens import issue_user_token

# Requests that generate this many examples per operation in well under a minute for the
# whole API; `--hypothesis-seed` (or a higher number here, locally) explores further.
EXAMPLES_PER_OPERATION = 8

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def wsgi_application():
    """The WSGI app, called in-process inside the test's transaction. As Django's test
    client does, requests do not close the database connection when they end (it would
    close the test's own transaction)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from portal.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(world, wsgi_application):
    tier = world.a.tenant.tier
    tier.default_features = sorted(entitlements.FEATURES)
    tier.save(update_fields=["default_features"])
    return schemathesis.openapi.from_wsgi("/api/schema/", wsgi_application)


@pytest.fixture
def owner_token(world):
    return issue_user_token(world.a.owner, world.a.tenant)


def walk_every_operation(
    api_schema, world, token: str | None, checks, *, headers=None, cookies=None, prefix=""
) -> list[str]:
    """Call every operation of the schema (those whose path starts with `prefix`) with `token`
    (or the `headers` and `cookies` given), generated requests valid and not; the failures,
    one per operation that broke a check."""
    # One walk that goes over the operations itself: schemathesis's own pytest integration
    # (`from_fixture`) uses a pytest internal that pytest 9 no longer has.
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 40, "the schema lost its operations"
    operations = [operation for operation in operations if operation.path.startswith(prefix)]
    headers = headers if headers is not None else {"Authorization": f"Bearer {token}"}
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            phases=[Phase.explicit, Phase.generate],
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def keeps_contract(case):
            if "tenant_slug" in (case.path_parameters or {}):
                # A random slug only ever meets the 404 of a tenant that does not exist;
                # the caller's own tenant reaches the operation itself.
                case.path_parameters["tenant_slug"] = world.a.tenant.slug
            if cookies is not None:
                case.cookies = dict(cookies)  # the session, never a generated one
            case.call_and_validate(headers=headers, checks=checks)

        try:
            keeps_contract()
        except (Exception, BaseExceptionGroup) as exc:  # check every operation, then report all
            failures.append(f"{operation.label}: {exc}")
    return failures


def test_every_api_operation_keeps_its_contract(api_schema, world, owner_token):
    failures = walk_every_operation(api_schema, world, owner_token, CHECKS)
    assert not failures, "\n\n".join(failures)


def test_every_api_operation_answers_an_api_client_without_a_server_error(api_schema, world):
    # An API client's token (client_credentials) has no person behind it: request.user is
    # a ClientPrincipal. With every scope there is, each operation must still answer as
    # documented (a refusal is a 403 problem), never assume a person and fail with a 500.
    from tenants.identity.scopes import SCOPES
    from tests.factories import client_token

    token = client_token(world.a.tenant, world.a.owner, set(SCOPES))
    failures = walk_every_operation(api_schema, world, token, CHECKS)
    assert not failures, "\n\n".join(failures)


def test_every_operator_api_operation_keeps_its_contract_for_an_operator(
    api_schema, wsgi_application, world, operator, client
):
    # The operator API answers staff browser sessions only (a token gets 404, walked above):
    # here as a signed-in operator, with the CSRF token a browser's script sends on writes,
    # from an address (a signed-in session's activity is kept with the address it came from).
    from django.middleware.csrf import _get_new_csrf_string

    def from_an_address(environ, start_response):
        return wsgi_application({**environ, "REMOTE_ADDR": environ.get("REMOTE_ADDR") or "127.0.0.1"}, start_response)

    api_schema = schemathesis.openapi.from_wsgi("/api/schema/", from_an_address)

    from tests.agents.helpers import make_catalogue
    from tests.skills.helpers import shared_skill

    make_catalogue(world.a.tenant, world.b.tenant)
    shared_skill(world.a.tenant.tier)
    client.force_login(operator)
    csrf = _get_new_csrf_string()
    cookies = {"sessionid": client.cookies["sessionid"].value, "csrftoken": csrf}
    failures = walk_every_operation(
        api_schema, world, None, CHECKS, headers={"X-CSRFToken": csrf}, cookies=cookies, prefix="/api/v1/operator/"
    )
    assert not failures, "\n\n".join(failures)


def test_the_schema_generates_without_a_warning(tmp_path):
    # A warning means a guess in the published schema: an untyped parameter, a response
    # documented as a free-form object, or an enum named "Status6b5Enum".
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
    assert "bearerAuth" in (tmp_path / "schema.yaml").read_text()


def test_the_tenant_usage_schema_publishes_the_bill_and_never_the_price_books_cost():
    # What a tenant's token reads under /usage/ is its bill (plan fee + token overage) with
    # tokens and turns; the price book's cost is the provider's (the operator API keeps it).
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]

    def properties(node, seen=()):
        """Every property name reachable from a schema node, through its $refs."""
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref:
                name = ref.rsplit("/", 1)[-1]
                return set() if name in seen else properties(components[name], (*seen, name))
            found = set(node.get("properties", {}))
            for value in node.values():
                found |= properties(value, seen)
            return found
        if isinstance(node, list):
            return set().union(*(properties(item, seen) for item in node)) if node else set()
        return set()

    usage = {path: item for path, item in schema["paths"].items() if "/usage/" in path and "/operator/" not in path}
    assert len(usage) == 3
    for path, item in usage.items():
        assert "cost" not in properties(item["get"]["responses"]), path
    assert {"bill", "forecast_bill", "budget"} <= set(components["Month"]["properties"])
    assert set(components["Bill"]["properties"]) == {"tokens", "fee", "overage", "total"}


def test_every_operator_api_operation_keeps_its_contract_for_an_operator_token(api_schema, world, operator):
    # The same walk with an operator API token (every operator scope) instead of a session:
    # no CSRF token, and the token's refusals (403 for a scope) are documented problems too.
    from tenants.identity import operator_tokens
    from tests.agents.helpers import make_catalogue
    from tests.skills.helpers import shared_skill

    make_catalogue(world.a.tenant, world.b.tenant)
    shared_skill(world.a.tenant.tier)
    _, raw = operator_tokens.create(operator, name="Contract walk", scopes=operator_tokens.SCOPES)
    failures = walk_every_operation(api_schema, world, raw, CHECKS, prefix="/api/v1/operator/")
    assert not failures, "\n\n".join(failures)
