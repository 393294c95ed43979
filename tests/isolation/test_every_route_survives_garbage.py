"""Every route the isolation walk knows, fed garbage by someone allowed to use it: never a 500.

tests/portal/test_malformed_input.py tries many bad bodies on chosen endpoints. This
walks every write route of ROUTES instead, so a route added tomorrow is fed the same
garbage the day it is listed there: the tenant's owner on their own tenant and
their own objects, the operator on operator routes. An API route answers an error
as problem JSON; a page answers 4xx or redirects with a message. (What each rejected
write leaves unchanged is checked per endpoint, in the tests of its room.)
"""

from __future__ import annotations

import functools
import json
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from tenants.entitlements import FEATURES
from tests.isolation import test_every_route as isolation
from tests.isolation.test_every_route import OperatorOnly, TenantScoped, _routes_of, classify
from tests.portal.helpers import PROBLEM_CONTENT_TYPE
from tests.portal.test_malformed_input import BAD_CONTENT_TYPES, BAD_JSON_BODIES

scene = isolation.scene  # the isolation walk's two tenants, their objects and A's signed-in owner


@functools.cache
def _field_names() -> tuple[str, ...]:
    """Every field name a write could read: the API's request bodies and the project's forms."""
    from django import forms
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    names: set[str] = set()
    with GENERATOR_STATS.silence():  # drf-spectacular's schema hints are not this test's business
        schema = SchemaGenerator().get_schema(request=None, public=True)
    for component in schema.get("components", {}).get("schemas", {}).values():
        names.update(component.get("properties", {}))
    pending = [forms.Form, forms.ModelForm]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in ("tenants", "agents", "billing", "portal"):
            names.update(getattr(cls, "base_fields", {}))
    return tuple(sorted(names))


# Values of the wrong kind for any field: structures where text is expected, numbers
# past every range, text where numbers are, control characters.
NASTY_JSON_VALUES = [{"x": [1]}, [None], -1e308, 10**40, "\u0000\ud800", "nan", "a" * 20_000, True]
NASTY_FORM_VALUES = ["\x00", "-99999999999999999999999999", "1e999", "NaN", "a" * 20_000, "2026-13-45", "ﬀ"]


def _garbage() -> list:
    names = _field_names()
    # The malformed bodies the chosen-endpoint tests use (broken JSON, wrong structures,
    # bad encodings, unsupported media types), then every known field set to a wrong kind.
    bodies = list(BAD_JSON_BODIES + BAD_CONTENT_TYPES)
    for i, value in enumerate(NASTY_JSON_VALUES):
        body = json.dumps({name: value for name in names}).encode()
        bodies.append((f"every-field-json-{i}", body, "application/json"))
    for i, value in enumerate(NASTY_FORM_VALUES):
        body = urlencode({name: value for name in names}).encode()
        bodies.append((f"every-field-form-{i}", body, "application/x-www-form-urlencoded"))
    return bodies


def _writes(kind):
    """(route, method) for every route of `kind` that accepts a write."""
    return [
        pytest.param(param.values[0], method, id=f"{param.id}-{method}")
        for param in _routes_of(kind)
        for method in classify(param.values[0]).methods
        if method != "GET"
    ]


def _check(response, api: bool, label: str) -> None:
    assert response.status_code < 500, f"{label} gave {response.status_code}"
    if api and response.status_code >= 400:
        assert response["Content-Type"] == PROBLEM_CONTENT_TYPE, f"{label}: {response['Content-Type']}"


@pytest.fixture
def entitled(scene):
    """A's tenant may use every feature, so that no write stops at the entitlement check."""
    tenant = scene["world"].a.tenant
    tenant.feature_grants = list(FEATURES)
    tenant.save(update_fields=["feature_grants"])
    return scene


@pytest.mark.parametrize(("route", "method"), _writes(TenantScoped))
def test_tenant_write_routes_never_fail_on_garbage(route, method, entitled):
    scene = entitled
    spec: TenantScoped = classify(route)
    kwargs = {"tenant_slug": scene["tenant_a_slug"]}
    kwargs.update({k: scene["a_objects"][v] for k, v in spec.objects.items()})
    url = reverse(route.name, kwargs=kwargs)
    for name, body, content_type in _garbage():
        response = scene["client"].generic(method, url, body, content_type)
        _check(response, spec.api, f"{method} {route.name} with {name}")


@pytest.mark.parametrize(("route", "method"), _writes(OperatorOnly))
def test_operator_write_routes_never_fail_on_garbage(route, method, scene, operator):
    spec: OperatorOnly = classify(route)
    client = scene["client"]
    client.force_login(operator)
    url = reverse(route.name, kwargs={k: scene[v] for k, v in spec.kwargs.items()})
    for name, body, content_type in _garbage():
        response = client.generic(method, url, body, content_type)
        _check(response, route.name.startswith("api:"), f"{method} {route.name} with {name}")


# Query parameters the pages and lists read, beyond the field names.
QUERY_NAMES = ("page", "page_size", "q", "cursor", "offset", "format", "ordering", "grouping", "day", "from", "to")


def _garbage_queries() -> list[tuple[str, str]]:
    names = sorted(set(_field_names()) | set(QUERY_NAMES))
    return [
        (f"every-parameter-{i}", urlencode({name: value for name in names}))
        for i, value in enumerate(NASTY_FORM_VALUES)
    ]


# Server-Sent Event streams read the relay from another connection, which a test inside one
# transaction cannot have; their one input, Last-Event-ID, is fed garbage in
# tests/agents/test_streaming.py (test_it_ignores_a_malformed_last_event_id).
STREAMS = {"agents:turn_events", "api:invocation-events"}


def _reads(kind):
    return [
        pytest.param(param.values[0], id=param.id)
        for param in _routes_of(kind)
        if "GET" in classify(param.values[0]).methods and param.id not in STREAMS
    ]


@pytest.mark.parametrize("route", _reads(TenantScoped))
def test_tenant_pages_and_lists_never_fail_on_garbage_parameters(route, entitled):
    spec: TenantScoped = classify(route)
    kwargs = {"tenant_slug": entitled["tenant_a_slug"]}
    kwargs.update({k: entitled["a_objects"][v] for k, v in spec.objects.items()})
    url = reverse(route.name, kwargs=kwargs)
    for name, query in _garbage_queries():
        response = entitled["client"].get(f"{url}?{query}")
        _check(response, spec.api, f"GET {route.name} with {name}")


@pytest.mark.parametrize("route", _reads(OperatorOnly))
def test_operator_pages_never_fail_on_garbage_parameters(route, scene, operator):
    spec: OperatorOnly = classify(route)
    client = scene["client"]
    client.force_login(operator)
    url = reverse(route.name, kwargs={k: scene[v] for k, v in spec.kwargs.items()})
    for name, query in _garbage_queries():
        _check(client.get(f"{url}?{query}"), route.name.startswith("api:"), f"GET {route.name} with {name}")


def test_the_streams_left_out_are_routes_that_exist():
    assert set(STREAMS) <= {param.id for param in _routes_of(TenantScoped)}
