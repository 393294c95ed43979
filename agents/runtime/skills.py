"""The "Skills" section of the reference agent's system prompt.

Every skill the request carries is listed (name, when to use it, its steps), in the
request's order. The section is capped at MAX_SECTION_CHARS: a skill that would pass
the cap is cut and the rest are named only, so a long catalogue cannot crowd out the
conversation or the sources in the model's context window.
"""

from __future__ import annotations

from agents.runtime.contract import SkillSpec

MAX_SECTION_CHARS = 24_000

HEADER = (
    "Skills: procedures you follow. When a request matches a skill's \"use when\", follow that skill's steps in order."
)


def skills_section(skills: tuple[SkillSpec, ...]) -> str:
    if not skills:
        return ""
    parts = [HEADER]
    used = len(HEADER)
    for skill in skills:
        block = f"## Skill: {skill.name}\nUse when: {skill.description.strip()}\n\n{skill.instructions.strip()}"
        room = MAX_SECTION_CHARS - used - 2
        if len(block) > room:
            note = f"## Skill: {skill.name}\n(steps omitted: the Skills section is capped at {MAX_SECTION_CHARS} chars)"
            if len(note) <= room:
                parts.append(note)
                used += len(note) + 2
            continue
        parts.append(block)
        used += len(block) + 2
    return "\n\n".join(parts)


def with_skills(system: str, skills: tuple[SkillSpec, ...]) -> str:
    """The system prompt with the Skills section after the agent's own instructions and sources."""
    section = skills_section(skills)
    if not section:
        return system
    return f"{system}\n\n{section}" if system else section
