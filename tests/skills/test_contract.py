"""The runtime contract's optional `skills`: absent is none, malformed is refused, and the
reference agent's Skills section is capped."""

from __future__ import annotations

import pytest

from agents.runtime.contract import ContractError, InvocationRequest, SkillSpec
from agents.runtime.skills import MAX_SECTION_CHARS, skills_section

BASE = {"invocation_id": "i-1", "prompt": "Hi", "agent": {"id": "a", "name": "A"}}


def test_it_reads_a_request_without_skills_as_none_and_writes_no_field():
    request = InvocationRequest.from_dict(BASE)
    assert request.skills == ()
    assert "skills" not in request.to_dict()


def test_it_round_trips_skills():
    body = {**BASE, "skills": [{"name": "Refunds", "description": "money back", "instructions": "1. Ask."}]}
    request = InvocationRequest.from_dict(body)
    assert request.skills == (SkillSpec(name="Refunds", description="money back", instructions="1. Ask."),)
    assert InvocationRequest.from_json(request.to_json()).to_dict()["skills"] == body["skills"]


@pytest.mark.parametrize(
    "skills",
    [
        "not a list",
        ["not an object"],
        [{"description": "no name", "instructions": "x"}],
        [{"name": "  ", "instructions": "x"}],
        [{"name": "N", "instructions": 5}],
        [{"name": "N"}],
        [{"name": "N", "instructions": "x" * 20_001}],
        [{"name": "N", "instructions": "x"}] * 33,
    ],
)
def test_it_refuses_malformed_skills(skills):
    with pytest.raises(ContractError):
        InvocationRequest.from_dict({**BASE, "skills": skills})


def test_the_skills_section_is_capped_and_names_what_it_left_out():
    skills = tuple(SkillSpec(name=f"S{i}", description="d", instructions="x" * 15_000) for i in range(3))
    section = skills_section(skills)
    assert len(section) <= MAX_SECTION_CHARS
    assert "## Skill: S0\nUse when: d" in section
    assert "## Skill: S1\n(steps omitted" in section and "## Skill: S2\n(steps omitted" in section
