"""The offline model: a deterministic, extractive responder that needs no network.

It exists so that the product works end to end on a laptop, in CI and in a
demo without any model endpoint, and so that tests can assert exact answers.
It never pretends to be a language model: every answer starts with
:data:`LABEL`, and the portal shows it as such.

How it answers
--------------
* With context passages: it splits them into sentences, scores each sentence
  against the prompt with BM25 (k1=1.2, b=0.75, over the sentences of this
  request; terms are lower-cased words minus a few stop words, with a plural
  ``s`` folded), and quotes the best :data:`MAX_QUOTES` sentences with numbered
  citations ``[1]``, ``[2]`` in order of appearance. Ties break by passage then
  sentence order, so the same input always gives the same answer.
* Without passages, or when no passage sentence shares a term with the prompt:
  a clearly templated answer that restates the question, says what the offline
  model can do, and quotes the most relevant earlier sentence of the
  conversation. It never quotes the agent's instructions: they are the
  tenant's system prompt and may be confidential. It suggests adding documents
  to a knowledge base only when the tenant has the ``knowledge_bases`` feature
  (its entitlements or feature flags, from the runtime request's tenant
  headers), so it never gives advice the tenant's plan cannot follow.
* With skills (the procedures the tenant has the agent follow): the skill whose name and
  "use when" best match the prompt by the same ranking, if any shares a term with it, is
  named after the answer with its steps ("Following the skill …"), up to
  :data:`MAX_SKILL_STEPS_CHARS`. Members can read their tenant's skills, so quoting them
  reveals nothing the instructions would.
* With recalled long-term memories (the member's facts, agents/runtime/memory.py),
  the templated answer also quotes the one that best matches the prompt, labelled
  "From your long-term memory"; memories are never cited as sources.

With tools (the request offers them and the runtime runs them): it decides
deterministically, from the prompt alone, whether one fits: arithmetic the member
asks for ("what is 12 * (3 + 4)?", "calculate 1500 / 12", or just "12*7"; never a
phone number, date, range or version, see :func:`arithmetic_expression`) → ``calculator``; asking the time or the date →
``current_time`` (with an IANA zone named in the prompt, else UTC); asking
about "my usage" or "how much have we used" → ``usage_this_month``. It calls
that tool, and once the result is back it answers from it, saying so. A tool
that is not offered is never called.

It streams the answer word by word, honours ``max_tokens`` (by the estimate),
and reports usage as estimated (``ceil(chars / 4)``, see ``models.base``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from agents.runtime.contract import Citation, Delta, Passage, SkillSpec, ToolCall, Usage
from agents.runtime.models.base import (
    CHARS_PER_TOKEN,
    ModelEvent,
    ModelInput,
    estimate_input_tokens,
    estimate_tokens,
)

LABEL = "[Offline model]"
DEFAULT_MODEL_ID = "offline-extractive-1"
MAX_QUOTES = 3
MAX_SENTENCE_CHARS = 400
MAX_SKILL_STEPS_CHARS = 1200
K1 = 1.2
B = 0.75
KNOWLEDGE_FEATURE = "knowledge_bases"

STOP_WORDS = frozenset(
    re.findall(
        r"\w+",
        """a an and are as at be by can could did do does for from had has have how i if in into is it its
        me my of on or our please should so than that the their them then there these they this to us was
        we were what when where which who why will with would you your""",
    )
)

_WORD_RE = re.compile(r"[a-z0-9]+")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_PIECE_RE = re.compile(r"\S+\s*|\s+")


def terms(text: str) -> list[str]:
    words = _WORD_RE.findall(text.lower())
    return [
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words if w not in STOP_WORDS
    ]


def sentences(text: str) -> list[str]:
    out = []
    for part in _SENTENCE_RE.split(text.strip()):
        part = " ".join(part.split())
        if part:
            out.append(part if len(part) <= MAX_SENTENCE_CHARS else part[: MAX_SENTENCE_CHARS - 1].rstrip() + "…")
    return out


def bm25_rank(query: list[str], documents: list[list[str]]) -> list[tuple[float, int]]:
    """(score, index) for every document with a positive score, best first, ties by index."""
    if not query or not documents:
        return []
    n = len(documents)
    avg_len = sum(len(d) for d in documents) / n or 1.0
    df = Counter(t for d in documents for t in set(d))
    ranked = []
    for index, doc in enumerate(documents):
        tf = Counter(doc)
        score = 0.0
        for term in set(query):
            if not tf[term]:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            score += idf * tf[term] * (K1 + 1) / (tf[term] + K1 * (1 - B + B * len(doc) / avg_len))
        if score > 0:
            ranked.append((score, index))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    return ranked


def _quote(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# An arithmetic expression: numbers joined by at least one operator, brackets allowed.
_EXPRESSION_RE = re.compile(r"[-(]*\d[\d.\s()+\-*/^%]*[\d)]")
# An operator between two operands. A minus counts only with a space on one side or next
# to a bracket: a hyphen squeezed between digits joins them (555-1234, 2026-12-04, 10-20).
_HAS_OPERATOR_RE = re.compile(
    r"[\d)]\s*(?:\*\*|//|[+*/^%])\s*[-(]*\d"
    r"|[\d)](?:\s+-\s*|\s*-\s+)[-(]*\d"
    r"|\)\s*-\s*[-(]*\d|[\d)]\s*-\s*\("
)
# Numbers that only look like sums: dates (2026-12-04, 12/04/2026, 4.12.2026) and versions (2.0.1).
_NOT_ARITHMETIC_RE = re.compile(r"\d+[-/.]\d+[-/.]\d+")
# The member asks for a result: a verb or question of arithmetic, or "=" after the expression.
_ARITHMETIC_INTENT_RE = re.compile(
    r"\b(?:calculate|calc|compute|evaluate|solve|work out|what(?:'s|\s+is|\s+are|\s+does)|"
    r"how (?:much|many)|equals?)\b|=",
    re.IGNORECASE,
)
_TIME_RE = re.compile(
    r"\b(what(?:'s| is) the (?:time|date)|what time|current time|time is it|time now|today'?s date|what day is)\b",
    re.IGNORECASE,
)
_ZONE_RE = re.compile(r"\b(?:[A-Z][A-Za-z_]+/[A-Z][A-Za-z_-]+(?:/[A-Z][A-Za-z_-]+)?|UTC)\b")
_USAGE_RE = re.compile(
    r"\b(my usage|our usage|usage this month|how much (?:have|did) (?:we|i) (?:used?|spen[td])|"
    r"how many tokens (?:have|did) (?:we|i))\b",
    re.IGNORECASE,
)


def choose_tool(prompt: str, offered: set[str]) -> ToolCall | None:
    """The one tool call the offline model makes for `prompt`, if an offered tool fits."""
    if "usage_this_month" in offered and _USAGE_RE.search(prompt):
        return ToolCall(name="usage_this_month", input={}, id="call_1")
    if "current_time" in offered and _TIME_RE.search(prompt):
        zone = _ZONE_RE.search(prompt)
        return ToolCall(name="current_time", input={"timezone": zone.group(0) if zone else "UTC"}, id="call_1")
    if "calculator" in offered:
        expression = arithmetic_expression(prompt)
        if expression is not None:
            return ToolCall(name="calculator", input={"expression": expression}, id="call_1")
    return None


def arithmetic_expression(prompt: str) -> str | None:
    """The expression the member asks to compute, or None.

    Both must hold: the prompt has an expression with an operator between numbers that is
    not a date or version (see :data:`_HAS_OPERATOR_RE`), and it asks for a result
    (:data:`_ARITHMETIC_INTENT_RE`) or is nothing but the expression ("12*7"). So "call
    555-1234", "10-20 people" or "order 3 + 4 boxes" are answered without the calculator.
    """
    candidates = [m.group(0).strip() for m in _EXPRESSION_RE.finditer(prompt)]
    candidates = [c for c in candidates if _HAS_OPERATOR_RE.search(c) and not _NOT_ARITHMETIC_RE.search(c)]
    if not candidates:
        return None
    expression = max(candidates, key=len)
    bare = prompt.strip().rstrip("?!=. ").strip() == expression
    if not bare and not _ARITHMETIC_INTENT_RE.search(prompt):
        return None
    return expression


def describe_result(call: ToolCall) -> str:
    """One line of the answer from one tool call and its result."""
    if call.error:
        return f"The {call.name} tool could not answer: {call.error}"
    result = call.result if isinstance(call.result, dict) else {"value": call.result}
    if call.name == "calculator" and "value" in result:
        return f"{result.get('expression', call.input.get('expression', ''))} = {result['value']}"
    if call.name == "current_time" and "time" in result:
        offset = str(result.get("utc_offset", ""))
        offset = f"UTC{offset[:3]}:{offset[3:]}" if len(offset) == 5 else "UTC"
        return (
            f"It is {result['time']} on {result.get('weekday', '')} {result.get('date', '')} "
            f"in {result.get('timezone', 'UTC')} ({offset})."
        )
    if call.name == "usage_this_month" and "tokens" in result:
        bill = f"{result.get('bill_so_far', '0')} {result.get('currency', '')}".strip()
        return (
            f"This month ({result.get('month', '')}) your organisation has used {result['tokens']:,} tokens "
            f"({result.get('input_tokens', 0):,} in, {result.get('output_tokens', 0):,} out) over "
            f"{result.get('turns', 0):,} turns; the bill so far is {bill}."
        )
    shown = ", ".join(f"{k}: {v}" for k, v in result.items())
    return f"The {call.name} tool answered: {_quote(shown, 500)}"


def matching_skill(query: list[str], skills: tuple[SkillSpec, ...]) -> SkillSpec | None:
    """The skill whose name and "use when" best match the prompt, if any shares a term with it."""
    ranked = bm25_rank(query, [terms(f"{skill.name} {skill.description}") for skill in skills])
    return skills[ranked[0][1]] if ranked else None


def following(skill: SkillSpec) -> str:
    steps = skill.instructions.strip()
    if len(steps) > MAX_SKILL_STEPS_CHARS:
        # Whole lines only: a step cut in the middle reads as a different instruction.
        cut = steps.rfind("\n", 0, MAX_SKILL_STEPS_CHARS)
        steps = steps[: cut if cut > 0 else MAX_SKILL_STEPS_CHARS].rstrip() + "\n\n(The other steps are in the skill.)"
    when = _quote(skill.description).rstrip(".")
    return f'Following the skill "{skill.name}" (use when: {when}):\n\n{steps}'


class OfflineModel:
    name = "offline"
    cites_passages = True

    def compose(self, model_input: ModelInput) -> tuple[str, list[tuple[int, Passage]]]:
        """The answer text and the (number, passage) pairs it cites."""
        if model_input.tool_results:
            names = sorted({call.name for call in model_input.tool_results})
            lines = [f"{LABEL} Answer from the {', '.join(names)} tool{'s' if len(names) > 1 else ''}:", ""]
            lines += [describe_result(call) for call in model_input.tool_results]
            return "\n".join(lines), []
        query = terms(model_input.prompt)
        found = self._from_passages(query, model_input.passages) if model_input.passages else None
        text, cited = found if found is not None else (self._templated(query, model_input), [])
        skill = matching_skill(query, model_input.skills)
        if skill is not None:
            text += "\n\n" + following(skill)
        return text, cited

    def _from_passages(self, query: list[str], passages: tuple[Passage, ...]):
        candidates = [(pi, s) for pi, passage in enumerate(passages) for s in sentences(passage.text)]
        ranked = bm25_rank(query, [terms(s) for _, s in candidates])[:MAX_QUOTES]
        if not ranked:
            return None
        numbers: dict[int, int] = {}  # passage index → citation number
        lines = []
        for _, index in ranked:
            pi, sentence = candidates[index]
            n = numbers.setdefault(pi, len(numbers) + 1)
            lines.append(f'- "{sentence}" [{n}]')
        cited = [(n, passages[pi]) for pi, n in numbers.items()]
        count = len(passages)
        header = (
            f"{LABEL} Extractive answer: the passages that best match your question, "
            f"quoted from {len(cited)} of the {count} source{'s' if count != 1 else ''} provided "
            "(no language model was used)."
        )
        return header + "\n\n" + "\n".join(lines), cited

    def _templated(self, query: list[str], model_input: ModelInput) -> str:
        if model_input.passages:
            opening = (
                f"{LABEL} None of the {len(model_input.passages)} sources provided matches your question, "
                "so this is a templated reply rather than an answer."
            )
        else:
            opening = (
                f"{LABEL} No sources were provided for this question, "
                "so this is a templated reply rather than an answer."
            )
        who = model_input.agent_name or "This agent"
        lines = [
            opening,
            "",
            f'You asked: "{_quote(model_input.prompt)}"',
            f"{who} is answering with the offline model, which does not write answers: "
            "it quotes the sentences of the sources it is given that best match a question.",
        ]
        if model_input.memories:
            # Recalled long-term memory (already matched to the prompt by the portal): the best
            # match by the same ranking, labelled as memory, never as a source.
            ranked_memories = bm25_rank(query, [terms(m) for m in model_input.memories])
            best = model_input.memories[ranked_memories[0][1]] if ranked_memories else model_input.memories[0]
            lines.append(f'From your long-term memory: "{_quote(best)}"')
        earlier = [s for m in model_input.history for s in sentences(m.content)]
        ranked = bm25_rank(query, [terms(s) for s in earlier])
        if ranked:
            lines.append(f'Earlier in this conversation: "{_quote(earlier[ranked[0][1]])}"')
        elif model_input.history:
            lines.append(
                f"This conversation has {len(model_input.history)} earlier messages; none matches your question."
            )
        if KNOWLEDGE_FEATURE in model_input.features:
            lines.append(
                "An administrator can add documents to a knowledge base this agent uses, so that answers quote them."
            )
        return "\n".join(lines)

    def generate(self, model_input: ModelInput, *, stream: bool) -> Iterator[ModelEvent]:
        if model_input.tools and not model_input.tool_results:
            call = choose_tool(model_input.prompt, {tool.name for tool in model_input.tools})
            if call is not None:
                yield call
                yield Usage(
                    input_tokens=estimate_input_tokens(model_input),
                    output_tokens=estimate_tokens(call.name) + estimate_tokens(str(dict(call.input))),
                    estimated=True,
                    model=model_input.spec.model_id or DEFAULT_MODEL_ID,
                )
                return
        answer, cited = self.compose(model_input)
        budget = model_input.spec.max_tokens * CHARS_PER_TOKEN
        if len(answer) > budget:
            answer = answer[:budget]
        for piece in _PIECE_RE.findall(answer):
            yield Delta(text=piece)
        for n, passage in cited:
            if f"[{n}]" in answer:  # a citation cut off by max_tokens is not reported
                yield Citation(passage_id=passage.id, title=passage.title, source=passage.source, index=n)
        yield Usage(
            input_tokens=estimate_input_tokens(model_input),
            output_tokens=estimate_tokens(answer),
            estimated=True,
            model=model_input.spec.model_id or DEFAULT_MODEL_ID,
        )
