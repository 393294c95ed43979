"""The builtin engine: an effective policy compiled once, then evaluated per text.

`compile_policy(config)` is cached by the policy's content (a few dozen policies
per process at most), so a chat turn pays only for evaluation. `evaluate()`
returns the enforced text and one `Trigger` per rule that fired; a trigger's
excerpt is built from the *redacted* text, never from the raw value.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.guardrails import detectors
from agents.guardrails.detectors import PLACEHOLDERS, Finding

INPUT, OUTPUT, RETRIEVAL = "input", "output", "retrieval"
EXCERPT_RADIUS = 40


@dataclass(frozen=True)
class Trigger:
    category: (
        str  # pii | custom_entity | blocked_term | denied_topic | injection | cross_tenant | format | backend_error
    )
    rule: str  # entity key, topic name, rule name…
    action: str  # block | redact | flag | allow
    excerpt: str = ""  # redacted context, safe to store and show
    score: float | None = None


@dataclass
class Evaluation:
    text: str  # the enforced text (redacted where the policy says so)
    triggers: list[Trigger] = field(default_factory=list)
    checks: int = 0  # detector passes run, for metering (guardrail_checks)

    @property
    def blocked(self) -> bool:
        return any(t.action == "block" for t in self.triggers)


class BackendError(Exception):
    """The checker itself failed (a custom pattern timed out, Bedrock unreachable…)."""


def placeholder(entity: str) -> str:
    if entity.startswith("custom:"):
        return f"[{entity.split(':', 1)[1].upper()}]"
    return PLACEHOLDERS.get(entity, "[REDACTED]")


def scrub(text: str) -> str:
    """Every builtin entity in `text` replaced by its placeholder: for excerpts shown to admins."""
    findings = detectors.find_entities(text, detectors.ENTITIES)
    return _replace(text, [(f.start, f.end, placeholder(f.entity)) for f in findings])


def _replace(text: str, spans: list[tuple[int, int, str]]) -> str:
    out, last = [], 0
    for start, end, replacement in sorted(spans):
        if start < last:
            continue
        out.append(text[last:start])
        out.append(replacement)
        last = end
    out.append(text[last:])
    return "".join(out)


def redact_spans(text: str, spans: list[tuple[int, int, str]]) -> tuple[str, list[tuple[int, int]]]:
    """`text` with the spans replaced, and where each replacement landed in the new text."""
    out, positions, last, length = [], {}, 0, 0
    for index, (start, end, replacement) in sorted(enumerate(spans), key=lambda item: item[1]):
        if start < last:
            positions[index] = positions.get(index, (length, length))
            continue
        out.append(text[last:start])
        length += start - last
        positions[index] = (length, length + len(replacement))
        out.append(replacement)
        length += len(replacement)
        last = end
    out.append(text[last:])
    return "".join(out), [positions[i] for i in range(len(spans))]


def excerpts(text: str, spans: list[tuple[int, int, str]]) -> list[str]:
    """One excerpt per span, cut from a copy of `text` in which the spans *and* every other
    builtin entity are already replaced: cutting first and scrubbing after could leave half a
    card number that no detector recognises any more."""
    others = [
        (f.start, f.end, placeholder(f.entity))
        for f in detectors.find_entities(text, detectors.ENTITIES)
        if all(f.end <= s or f.start >= e for s, e, _ in spans)
    ]
    safe, positions = redact_spans(text, list(spans) + others)
    result = []
    for start, end in positions[: len(spans)]:
        left, right = max(0, start - EXCERPT_RADIUS), min(len(safe), end + EXCERPT_RADIUS)
        result.append(("…" if left else "") + safe[left:right] + ("…" if right < len(safe) else ""))
    return result


def _bare_excerpt(trigger: Trigger) -> str:
    """A trigger's excerpt without the text around it: an entity's placeholder, else nothing."""
    if trigger.category == "pii":
        return placeholder(trigger.rule)
    if trigger.category == "custom_entity":
        return placeholder(f"custom:{trigger.rule}")
    if trigger.category == "cross_tenant":
        return trigger.excerpt  # a fixed "[OTHER_TENANT]", never the text
    return ""


class CompiledPolicy:
    def __init__(self, config: dict):
        self.config = config
        actions = config["entities"]
        self.entity_actions = {k: a for k, a in actions.items() if a != "allow"}
        self.custom = [
            (c["name"], detectors.compile_custom(c["pattern"]), c["action"]) for c in config["custom_entities"]
        ]
        self.terms = detectors.TermMatcher(config["blocked_terms"])
        self.topics = detectors.TopicMatcher(config["denied_topics"])
        self.injection = config["injection"]
        self.output_pii = config["output_pii"]
        self.json_schema = config.get("json_schema")
        self.block_message = config["block_message"]
        self.fail_closed = config["failure_mode"] == "closed"

    # -- the pieces ------------------------------------------------------------------------

    def pii(self, text: str, evaluation: Evaluation, stage: str) -> None:
        if stage == OUTPUT and not self.output_pii:
            return
        findings: list[Finding] = []
        if self.entity_actions:
            evaluation.checks += 1
            findings.extend(detectors.find_entities(text, self.entity_actions))
        for name, compiled, _action in self.custom:
            evaluation.checks += 1
            try:
                findings.extend(detectors.find_custom(text, name, compiled))
            except TimeoutError:
                raise BackendError(f"custom entity {name} timed out") from None
        if not findings:
            return
        findings = detectors.resolve_overlaps(findings)
        custom_actions = {f"custom:{name}": action for name, _c, action in self.custom}
        redactions = [(f.start, f.end, placeholder(f.entity)) for f in findings]
        for f, excerpt in zip(findings, excerpts(text, redactions), strict=True):
            action = custom_actions.get(f.entity) or self.entity_actions[f.entity]
            category = "custom_entity" if f.entity.startswith("custom:") else "pii"
            evaluation.triggers.append(Trigger(category, f.entity.split(":", 1)[-1], action, excerpt))
        # Blocked or not, what is stored carries placeholders: a blocked message is kept for
        # the record, and the record must not hold the value that got it blocked.
        evaluation.text = _replace(text, redactions)

    def blocked_terms(self, text: str, evaluation: Evaluation) -> None:
        if not self.terms.size:
            return
        evaluation.checks += 1
        for term in self.terms.find(text):
            # The term is the policy's own word, but the excerpt stays generic: the text around a
            # slur is rarely useful and sometimes personal.
            evaluation.triggers.append(Trigger("blocked_term", term, "block", "[TERM]"))

    def denied_topics(self, text: str, evaluation: Evaluation) -> None:
        if not self.topics.topics:
            return
        evaluation.checks += 1
        for name, score in self.topics.find(text):
            evaluation.triggers.append(Trigger("denied_topic", name, "block", excerpts(text, [(0, 0, "")])[0], score))

    def injection_check(self, text: str, evaluation: Evaluation, action: str = "block", sensitivity: str = "") -> None:
        sensitivity = sensitivity or self.injection
        if sensitivity == "off":
            return
        evaluation.checks += 1
        result = detectors.is_injection(text, sensitivity)
        if result is not None:
            start, end = result.spans[0]
            excerpt = excerpts(text, [(start, end, scrub(text[start:end]))])[0]
            evaluation.triggers.append(Trigger("injection", "+".join(result.rules), action, excerpt, result.score))

    def cross_tenant(
        self, text: str, evaluation: Evaluation, markers, tenant_id: int, supplied: Callable[[str], bool] | None = None
    ) -> None:
        """Another tenant's marker in an answer blocks it, unless `supplied(marker)` says the
        tenant's own side wrote that marker (see agents.guardrails.services.TenantSupplied):
        blocking those would tell the person whether a name they typed is another customer."""
        if markers is None:
            return
        evaluation.checks += 1
        for _start, _end, marker in markers.find(text, tenant_id):
            if supplied is not None and supplied(marker):
                continue
            # No excerpt around it: the words next to another tenant's name may be that
            # tenant's data, and the event is shown to this tenant's admins.
            evaluation.triggers.append(Trigger("cross_tenant", "other_tenant_marker", "block", "[OTHER_TENANT]"))
            return

    def answer_format(self, text: str, evaluation: Evaluation) -> None:
        if not self.json_schema:
            return
        import jsonschema

        evaluation.checks += 1
        try:
            jsonschema.validate(json.loads(text), self.json_schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            reason = getattr(exc, "message", "not JSON")
            evaluation.triggers.append(Trigger("format", "json_schema", "block", scrub(str(reason)[:160])))

    # -- the stages ------------------------------------------------------------------------

    @staticmethod
    def withhold_context(evaluation: Evaluation) -> Evaluation:
        """A blocked term's excerpt is "[TERM]", so no other excerpt of the same text may show
        the words around its finding either: they could hold the term (in any spelling the
        matcher sees through, or cut in half at the excerpt's edge). Nor around another
        tenant's marker ("[OTHER_TENANT]"): the name itself and the words next to it, that
        tenant's data, would reach this tenant's admins in another rule's excerpt. Those
        excerpts keep only the finding's placeholder, or nothing."""
        withheld = ("blocked_term", "cross_tenant")
        if not any(t.category in withheld for t in evaluation.triggers):
            return evaluation
        evaluation.triggers = [
            t if t.category in withheld else dataclasses.replace(t, excerpt=_bare_excerpt(t) if t.excerpt else "")
            for t in evaluation.triggers
        ]
        return evaluation

    def evaluate_input(self, text: str) -> Evaluation:
        evaluation = Evaluation(text=text)
        self.blocked_terms(text, evaluation)
        self.denied_topics(text, evaluation)
        self.injection_check(text, evaluation)
        self.pii(text, evaluation, INPUT)
        return self.withhold_context(evaluation)

    def evaluate_output(
        self,
        text: str,
        *,
        markers=None,
        tenant_id: int = 0,
        final: bool = False,
        supplied: Callable[[str], bool] | None = None,
    ) -> Evaluation:
        evaluation = Evaluation(text=text)
        self.cross_tenant(text, evaluation, markers, tenant_id, supplied)
        self.blocked_terms(text, evaluation)
        self.denied_topics(text, evaluation)
        self.pii(text, evaluation, OUTPUT)
        if final:
            self.answer_format(evaluation.text, evaluation)
        return self.withhold_context(evaluation)

    def evaluate_retrieved(self, text: str) -> Evaluation:
        evaluation = Evaluation(text=text)
        # Retrieved text is data, not a request: any injection signal at all is flagged,
        # at least at medium sensitivity even when the tenant switched input checks off.
        sensitivity = self.injection if self.injection != "off" else "medium"
        self.injection_check(text, evaluation, action="flag", sensitivity=sensitivity)
        return evaluation

    def evaluate_tool_result(self, text: str) -> Evaluation:
        """A tool's result is retrieved text too (it goes back into the model's context):
        injection is flagged as for passages, and the policy's entities and blocked terms
        apply as they do to what a person types (redacted, or the result blocked)."""
        evaluation = self.evaluate_retrieved(text)
        self.blocked_terms(text, evaluation)
        self.pii(text, evaluation, INPUT)
        return self.withhold_context(evaluation)


@functools.lru_cache(maxsize=128)
def _compile_cached(key: str) -> CompiledPolicy:
    return CompiledPolicy(json.loads(key))


def compile_policy(config: dict) -> CompiledPolicy:
    return _compile_cached(json.dumps(config, sort_keys=True))


# Where every builtin detector's scan of a text starts afresh (OutputGuard.shown redacts the text
# before such a point once, and reads only what follows it again): a lowercase letter after a
# white space character after a lowercase letter, as the detectors read the text, each read
# from one character of the original (not an entity or an escape: "&#97; b"). No match of a
# builtin pattern holds such three characters, bar the keyword-led ones near their start
# ("date of birth", "client secret", "mrn abc123", "12th january"): so none of their cue words
# may start within _CUE_REACH read characters before the point. The private key pattern, which
# runs to the end of the text, holds anything: an answer with one is redacted whole each time.
_SETTLING = re.compile(r"(?<=[a-z]\s)[a-z]")
# The cue words those matches start with, as detectors looks for them in the folded text (the
# password pattern's are its names' first words: "client secret", "api key", "auth token").
_CUE_WORDS = re.compile(
    "|".join(
        map(
            re.escape,
            sorted(
                {
                    *detectors._CVV_CUES,
                    *detectors._SSN_CUES,
                    *detectors._DOB_CUES,
                    *detectors._MRN_CUES,
                    *("secret", "api", "access", "auth", "password", "passwd", "pwd"),
                }
            ),
        )
    )
)
# Longer than a keyword-led match reaches from its start to its last "letter, space, letter"
# (about 27 read characters: "medical record number: abc123"), and than the context a finding
# is judged by (30 characters before a card number).
_CUE_REACH = 48
# How far (in read characters) a settled point stays behind the end of the text redacted: the
# stable text of a stream can end a little earlier next time (an entity completed reads as
# fewer characters; a value found straddling its end is held back whole), and the redaction
# then starts again from the beginning.
_SETTLED_BEHIND = 32
_PRIVATE_KEY = "PRIVATE KEY"  # detectors' hint for the private key pattern


def _lookalike_mode(lookalike: bool, own_script: bool, latin: bool) -> str:
    """How detectors._confusables maps look-alike letters in a text holding these kinds of
    letters (detectors.LOOKALIKE_CLUES): not at all, all of them, or in Latin words only."""
    if not lookalike or (own_script and not latin):
        return "none"
    return "words" if own_script else "all"


def _clues(decoded: str, end: int | None = None) -> tuple[bool, bool, bool]:
    end = len(decoded) if end is None else end
    return tuple(pattern.search(decoded, 0, end) is not None for pattern in detectors.LOOKALIKE_CLUES.values())


class RedactedStream:
    """A growing text (the stable part of a streamed answer: enforce.OutputGuard.shown) with
    the builtin entities of a policy replaced, as pii() replaces them, kept up to date as it
    grows: `settled` raw characters of it are redacted for good (`head`), and each
    time only the text from `window` on is handed to the detectors again, of which what
    follows `settled` is redacted afresh. Both are points where every detector's scan starts
    afresh (_SETTLING), at least _CUE_REACH read characters apart: whatever follows, the
    findings after `settled` in the text from `window` are those in the whole text, and none
    spans it. The detectors read the text from `window` as in the whole text when its
    look-alike letters map the same (_lookalike_mode of what the whole text holds): `clues`
    are those of the text before `window`, `mode` the whole text's when `head` was made."""

    def __init__(self, compiled: CompiledPolicy, owner, generation: int):
        # `owner` and `generation` say which text this is (enforce.Reading and its generation):
        # the text must be that one grown, from the same beginning.
        self.compiled, self.owner, self.generation = compiled, owner, generation
        self.window = self.settled = 0
        self.head = ""
        self.clues = (False, False, False)
        self.mode = "none"
        self.whole = False  # a private key: the whole text is redacted every time

    def valid_for(self, owner, generation: int, stable: str) -> bool:
        return owner is self.owner and generation == self.generation and len(stable) >= self.settled and not self.whole

    def redact(self, stable: str) -> str:
        """`stable` (the text redacted last time, or one that begins with as much of it as is
        settled) with the entities of the policy replaced by their placeholders."""
        window = stable[self.window :]
        canon = detectors.canonical(window)
        plain = window.isascii() and "&" not in window and "\\" not in window
        decoded = window if plain else detectors.decode(window)[0]
        window_clues = _clues(decoded)
        clues = tuple(a or b for a, b in zip(self.clues, window_clues, strict=True))
        mode = _lookalike_mode(*clues)
        if self.settled and (
            _PRIVATE_KEY in canon.text
            or mode != self.mode
            or (window_clues[0] and _lookalike_mode(*window_clues) != mode)
        ):
            # What was settled, or the text from `window`, does not read as in the whole text
            # now (or a private key may run from anywhere to its end): start again from the
            # beginning.
            self.__init__(self.compiled, self.owner, self.generation)
            return self.redact(stable)
        self.whole = _PRIVATE_KEY in canon.text
        self.mode = mode
        offset, settled = self.window, self.settled
        findings = [
            f for f in detectors.find_entities(window, self.compiled.entity_actions) if f.start + offset >= settled
        ]
        spans = [(f.start + offset - settled, f.end + offset - settled, placeholder(f.entity)) for f in findings]
        shown = self.head + _replace(stable[settled:], spans)
        if not self.whole:
            self._settle(stable, canon, decoded, findings)
        return shown

    def _settle(self, stable: str, canon, decoded: str, findings) -> None:
        """Move `settled` (and `window`) on to the last points the text from `window` allows."""
        offset = self.window
        read = len(canon.text)

        starts, ends = canon.starts, canon.ends
        points = [(0, 0)]  # (raw, read) in the window: its start is one
        for match in _SETTLING.finditer(canon.text, 0, max(0, read - _SETTLED_BEHIND + 1)):
            at = match.start()
            if starts is None:
                points.append((at, at))
                continue
            raw = starts[at]
            if starts[at - 2] == raw - 2 and ends[at - 2] == starts[at - 1] == raw - 1 and ends[at - 1] == raw:
                points.append((raw, at))
        if len(points) < 2:
            return
        cues = [m.start() for m in _CUE_WORDS.finditer(detectors._fold(canon.text))]
        for raw, at in reversed(points[1:]):
            if raw + offset <= self.settled:
                return
            if at < _CUE_REACH or _cue_between(cues, at - _CUE_REACH, at):
                continue
            # The window of the next redaction: the last point _CUE_REACH read characters before.
            window_raw, window_read = next((r, a) for r, a in reversed(points) if a <= at - _CUE_REACH)
            settled = raw + offset
            spans = [
                (f.start + offset - self.settled, f.end + offset - self.settled, placeholder(f.entity))
                for f in findings
                if f.start + offset < settled
            ]
            self.head += _replace(stable[self.settled : settled], spans)
            self.settled = settled
            self.clues = tuple(a or b for a, b in zip(self.clues, _clues(decoded, window_read), strict=True))
            self.window = window_raw + offset
            return


def _cue_between(starts: list[int], lo: int, hi: int) -> bool:
    i = bisect.bisect_left(starts, lo)
    return i < len(starts) and starts[i] < hi
