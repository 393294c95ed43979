"""The act-on-behalf token a chat turn gets (runtime_gateway.mint_act_on_behalf_token).

The worker mints it without the token endpoint (oauth.act_on_behalf on a subject it builds
itself), so the endpoint's refusals must hold there too: an agent the operator switched off
acts for nobody, in a turn as at the endpoint.
"""

from __future__ import annotations

import pytest

from agents import runtime_gateway
from agents.models import Invocation
from tenants.context import tenant_context
from tenants.identity import services
from tests.agents.helpers import make_catalogue, make_turn


def mint(side, invocation) -> str:
    with tenant_context(side.tenant):
        invocation = Invocation.objects.select_related("agent__identity", "conversation", "user").get(pk=invocation.pk)
        return runtime_gateway.mint_act_on_behalf_token(side.tenant, invocation)


@pytest.fixture
def turn(world):
    catalogue = make_catalogue(world.a.tenant)
    _, _, invocation = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, "Refund?")
    return catalogue, invocation


def test_it_mints_a_token_naming_the_agent(world, turn):
    assert mint(world.a, turn[1])


def test_an_agent_the_operator_switched_off_gets_no_token_for_a_turn(world, operator, turn):
    catalogue, invocation = turn
    services.set_agent_identity_enabled(operator, catalogue.helpdesk.identity, enabled=False)

    with pytest.raises(runtime_gateway.RuntimeRejected, match="may not act for you here"):
        mint(world.a, invocation)
