"""Publishing a version and rolling back to an earlier one ask first, in the page: the row's
button only opens a panel that says what happens, and the form that posts is inside it."""

from __future__ import annotations

from agents.registry import services
from tests.html_tree import confirm_step, parse
from tests.registry.helpers import as_operator, draft


def test_the_operator_confirms_before_publishing_or_rolling_back(client, world, catalogue, operator, second_operator):
    def three_versions():
        agent, first = services.create_agent(operator, draft(name="Translator"))
        for version in (first, services.create_version(operator, agent, draft(name="Translator", instructions="v2"))):
            services.submit(operator, version)
            services.approve(second_operator, version)
        services.submit(operator, services.create_version(operator, agent, draft(name="Translator", instructions="v3")))
        return agent

    agent = as_operator(three_versions)  # v1 superseded, v2 live, v3 waiting for a review
    client.force_login(second_operator)
    page = parse(client.get(f"/operator/agents/{agent.pk}/").content)
    base = f"/operator/agents/{agent.pk}/versions/"

    details, form = confirm_step(page, base + "3/approve/")
    assert details.elements[0].text == "Approve and publish…"
    assert "Publish version 3?" in details.text
    assert [b.text for b in form.find_all("button")] == ["Publish version 3"]

    details, form = confirm_step(page, base + "1/roll-back/")
    assert details.elements[0].text == "Roll back to this…"
    assert "Roll back to version 1?" in details.text
    assert [b.text for b in form.find_all("button")] == ["Roll back to version 1"]
    states = as_operator(lambda: [v.state for v in services.versions_of(agent)])
    assert states == ["submitted", "approved", "superseded"]  # the page only asked
