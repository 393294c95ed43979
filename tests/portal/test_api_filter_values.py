"""An unknown value of a list endpoint's filter is a 400 problem naming the parameter and
the values it takes, never silently ignored (which answered every row, as if unfiltered)."""

from __future__ import annotations

import pytest

from tests.portal.helpers import validation_problem

pytestmark = pytest.mark.django_db

T = "/api/v1/tenants/alpha/"
# (path, parameter, some of the values it takes, who asks)
FILTERS = [
    (T + "guardrails/events/", "stage", ["input", "output"], "owner"),
    (T + "guardrails/events/", "category", ["pii"], "owner"),
    (T + "invitations/", "status", ["pending", "accepted", "revoked"], "owner"),
    (T + "invoices/", "status", ["draft", "final"], "owner"),
    (T + "usage/timeseries/", "grouping", ["day", "week", "month"], "owner"),
    (T + "usage/summary/", "range", ["30d", "90d", "month"], "owner"),
    (T + "usage/breakdown/", "by", ["model", "agent"], "owner"),
    ("/api/v1/operator/invoices/", "status", ["draft", "final"], "operator"),
    ("/api/v1/operator/billing/tenants/", "sort", ["revenue", "name"], "operator"),
    ("/api/v1/operator/billing/tenants/", "dir", ["asc", "desc"], "operator"),
]


def _login(client, world, operator, who):
    client.force_login(operator if who == "operator" else world.a.owner)


@pytest.mark.parametrize(("path", "parameter", "allowed", "who"), FILTERS)
def test_an_unknown_filter_value_is_a_400_problem_naming_the_parameter_and_its_values(
    client, world, operator, path, parameter, allowed, who
):
    _login(client, world, operator, who)

    body = validation_problem(client.get(path, {parameter: "bogus"}))

    assert list(body["errors"]) == [parameter]
    assert parameter in body["detail"]
    assert "bogus" in body["detail"]
    for value in allowed:
        assert value in body["detail"]


@pytest.mark.parametrize(("path", "parameter", "allowed", "who"), FILTERS)
def test_every_allowed_filter_value_is_accepted(client, world, operator, path, parameter, allowed, who):
    _login(client, world, operator, who)
    for value in allowed:
        response = client.get(path, {parameter: value})
        assert response.status_code == 200, (value, response.content)
