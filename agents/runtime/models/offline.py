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

It streams the answer word by word, honours ``max_tokens`` (by the estimate),
and reports usage as estimated (``ceil(chars / 4)``, see ``models.base``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from agents.runtime.contract import Citation, Delta, Passage, Usage
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


class OfflineModel:
    name = "offline"
    cites_passages = True

    def compose(self, model_input: ModelInput) -> tuple[str, list[tuple[int, Passage]]]:
        """The answer text and the (number, passage) pairs it cites."""
        query = terms(model_input.prompt)
        if model_input.passages:
            found = self._from_passages(query, model_input.passages)
            if found is not None:
                return found
        return self._templated(query, model_input), []

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
