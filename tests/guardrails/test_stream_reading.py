"""The streamed answer's reading (enforce.Reading) is kept up to date as deltas arrive instead
of being decoded again for every check; these pin that this changes nothing: for many
chunkings of tricky answers (entities and escapes split across deltas, numeric character
references without ";", abbreviations, look-alike letters, sentences longer than
SENTENCE_LOOKBACK), at every delta

- the incremental reading is the text detectors.canonical reads, mapped onto the raw text;
- what the stream's checks ask of it (where the last N read characters start, where the last
  sentence starts, the next window, how much may be relayed) is what a reading of the whole
  answer so far built from scratch answers;
- for the realistic answers, it is also what the previous code (each question decoding its
  slice of the answer again: kept below as `Legacy`) answered;
- and an OutputGuard streaming them clears, shows and blocks the same as one that reads the
  answer from scratch at every check, and as one answering with the previous code."""

from __future__ import annotations

import random

import pytest

from agents.guardrails import detectors, enforce
from tenants.context import tenant_context
from tests.guardrails.conftest import set_tier_policy

CARD = "4111 1111 1111 1111"
FILLER = "our team looks at refunds shipping returns and exchanges every working day "


def decimal_entities(text: str) -> str:
    return "".join(f"&#{ord(char)};" for char in text)


def hex_entities(text: str) -> str:
    return "".join(f"&#x{ord(char):x};" for char in text)


ANSWERS = {
    "abbreviations": (
        "Refunds, e.g. for shoes, take 3.5 days in the U.S. and Canada. See Dr. Smith vs. Mr. Jones. "
        "Wait... what now? Yes!\n\nNew part; more.\n1. First item\n2. Second item\n- Buy now.\n- Sell later. "
    )
    * 6,
    "decimal card": "Your card is " + decimal_entities(CARD) + " and it is active. " * 8,
    "hex card": "Thanks. " * 20 + "Your card is " + hex_entities(CARD) + " and it is active. " * 8,
    "references without ;": "Card &#52&#49&#49&#49 1111 1111 1111 ok&#46 Then more&#46; Next &#x34&#x31 two. " * 8,
    "named and sentence entities": (
        "Investment tips &amp; advice: buy ACME now&#46; Then &lt; 3 &gt; more&#x2e;&#32;Next one&period; "
        "Ok&excl;&NewLine;Fine &quot;quoted&quot;. &ampfoo; &unknownentity; & alone. "
    )
    * 6,
    "markdown escapes": "Write to jane\\.doe\\@example\\.com today\\. Then\\! more \\\\. Ok\\; next\\\\\\. one. " * 8,
    "long sentence": "Investment " + FILLER * 20 + "that is my advice. " + "Short one. " * 30,
    "no punctuation": FILLER * 25,
    "unicode": (
        "Ｃａｌｌ ５５５－２０１－３３４４ \u200bnow. Со. Дом стоит. Mr. Х. е.g. stuff. ﬁne café\u0301. "
        "٣٤٥ digits. a&#8203;b&zwj;c. &shy;Next. Ｄｒ. Who. "
    )
    * 6,
    # "Со." in Cyrillic reads as the abbreviation "Co." where no other Cyrillic letter is near.
    "look-alike abbreviation": "Дом стоит. " + FILLER * 15 + "Ask Со. today, Со. tomorrow. " * 8,
    "blocked term": "Thanks. " * 20 + "The plan: " + decimal_entities("Nightingale Expansion") + " starts soon. " * 8,
    "white space": "End.   \n\n  \t Start again.\u00a0\u00a0Next!" + " " * 120 + "After the gap. " * 10,
}

# Pieces the random answers are made of: every kind of unit, and parts of units, so that a
# delta often ends inside one.
PIECES = [
    *"aB.. \n\n&#4;x\\\\",
    "6",
    "amp;",
    "&#46;",
    "&#32;",
    "&#10;",
    "&#8203;",
    "&nbsp;",
    "&amp;",
    "\\.",
    "\\\\",
    "е",
    "Д",
    "с",
    "ｆ",
    "\u200b",
    "\u0301",
    "ﬁ",
    "e.g.",
    "Dr",
    "Со",
    "U.S.",
    "...",
    "1.",
    "word",
    "  ",
]


def random_answer(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(size))


def chunkings(text: str, rng: random.Random, count: int):
    yield [text]
    yield list(text)
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, len(text) // 3 + 1))))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def prefixes(parts: list[str]):
    text = ""
    for part in parts:
        text += part
        yield text


class Legacy:
    """The previous code: each question decodes its slice of the answer again."""

    @staticmethod
    def sentence_starts(text: str, lo: int, hi: int) -> list[int]:
        base = max(0, lo - enforce._LONGEST_UNIT)
        canon = detectors.canonical(text[base:hi])
        read = len(canon.text)
        starts = (base + canon.span(c, c + 1)[0] if c < read else hi for c in detectors.sentence_starts(canon.text))
        return [start for start in starts if start > lo]

    @classmethod
    def last_sentence_start(cls, text: str, lo: int = 0, hi: int | None = None) -> int:
        starts = cls.sentence_starts(text, lo, len(text) if hi is None else hi)
        return starts[-1] if starts else lo

    @staticmethod
    def raw_start_of_last(text: str, end: int, chars: int) -> int:
        size = 4 * (chars + enforce._LONGEST_UNIT)
        while True:
            lo = max(0, end - size)
            canon = detectors.canonical(text[lo:end])
            read = len(canon.text)
            if lo == 0:
                return canon.span(read - chars, read)[0] if read > chars else 0
            if read >= chars + enforce._LONGEST_UNIT:
                return lo + canon.span(read - chars, read)[0]
            size *= 4

    @classmethod
    def window_bounds(cls, text: str, checked_upto: int, topics: bool) -> tuple[int, bool]:
        start = cls.raw_start_of_last(text, checked_upto, enforce.OVERLAP)
        if not topics or not start:
            return start, True
        floor = max(0, start - enforce.SENTENCE_LOOKBACK)
        starts = cls.sentence_starts(text, floor, start + 1)
        return (starts[-1], True) if starts else (floor, floor == 0)

    @classmethod
    def relay_limit(cls, text: str, checked_upto: int, window: int, topics: bool) -> int:
        limit = cls.raw_start_of_last(text, checked_upto, enforce.HOLD_BACK)
        if topics:
            limit = min(limit, cls.last_sentence_start(text, window, checked_upto) if window < checked_upto else window)
        return limit


class LegacyReading:
    """Reading's questions answered by the previous code (for an OutputGuard)."""

    generation = 1  # it reads one answer (what OutputGuard.shown asks of a Reading besides)

    def __init__(self):
        self.raw = ""

    def update(self, text: str) -> None:
        self.raw = text

    def start_of_last(self, chars: int, end: int | None = None) -> int:
        return Legacy.raw_start_of_last(self.raw, len(self.raw) if end is None else end, chars)

    def window_bounds(self, checked_upto: int, topics: bool) -> tuple[int, bool]:
        return Legacy.window_bounds(self.raw, checked_upto, topics)

    def relay_limit(self, checked_upto: int, window: int, topics: bool) -> int:
        return Legacy.relay_limit(self.raw, checked_upto, window, topics)


def questions(reading, text: str, checked: int) -> dict:
    """What the stream's checks ask of the answer so far (`checked`: its length at the last
    check), through `reading` (a Reading or LegacyReading of `text`)."""
    n = len(text)
    cut = reading.start_of_last(enforce.HOLD_BACK)
    answers = {"hold back": cut, "before values": reading.start_of_last(2 * enforce.HOLD_BACK, cut)}
    for chars in (1, 3, 40):
        answers[f"last {chars}"] = reading.start_of_last(chars)
    for end in {checked, n - 1, n - 3, n // 2}:
        if 0 <= end <= n:
            answers[f"last 10 of {end}"] = reading.start_of_last(10, end)
    for topics in (False, True):
        start, whole = reading.window_bounds(checked, topics)
        answers[f"window {topics}"] = (start, whole)
        answers[f"relay {topics}"] = reading.relay_limit(n, start, topics)
    return answers


def assert_reads_as_the_detectors(reading: enforce.Reading, text: str) -> None:
    canon = detectors.canonical(text)
    clues = [pattern.search(reading.text) is not None for pattern in detectors.LOOKALIKE_CLUES.values()]
    assert detectors.lookalikes_as(reading.text, *clues) == canon.text
    assert reading.starts == [canon.span(c, c + 1)[0] for c in range(len(canon.text))]


def assert_same_sentence_starts(reading: enforce.Reading, text: str) -> None:
    """Every sentence start, as detectors.sentence_starts finds them in what text[:hi] reads."""
    for hi in {len(text), len(text) - 1, len(text) // 2}:
        canon = detectors.canonical(text[:hi])
        expected = [
            canon.span(c, c + 1)[0] if c < len(canon.text) else hi for c in detectors.sentence_starts(canon.text)
        ]
        expected = [start for start in expected if start > 0]
        found = reading.last_sentence_start(0, hi)
        assert found == (expected[-1] if expected else None), (hi, text[:hi])


@pytest.mark.parametrize("name", list(ANSWERS))
def test_a_tricky_answer_reads_the_same_incrementally_from_scratch_and_as_before(name):
    text = ANSWERS[name]
    rng = random.Random(name)
    for parts in chunkings(text, rng, 6):
        reading, checked = enforce.Reading(), 0
        for so_far in prefixes(parts):
            reading.update(so_far)
            assert_reads_as_the_detectors(reading, so_far)
            expected = questions(enforce.Reading(so_far), so_far, checked)
            assert questions(reading, so_far, checked) == expected, (name, so_far)
            legacy = LegacyReading()
            legacy.update(so_far)
            assert questions(legacy, so_far, checked) == expected, (name, so_far)
            checked = len(so_far)
        assert_same_sentence_starts(reading, text)


@pytest.mark.parametrize("seed", range(40))
def test_a_random_answer_reads_the_same_incrementally_and_from_scratch(seed):
    """Answers made of units and parts of units at random (runs of backslashes, entities cut
    anywhere, look-alike letters next to full stops): the incremental reading is the whole
    answer's, at every delta."""
    rng = random.Random(seed)
    text = random_answer(rng, rng.randint(20, 160))
    for parts in chunkings(text, rng, 4):
        reading, checked = enforce.Reading(), 0
        for so_far in prefixes(parts):
            reading.update(so_far)
            assert_reads_as_the_detectors(reading, so_far)
            assert questions(reading, so_far, checked) == questions(enforce.Reading(so_far), so_far, checked), so_far
            assert_same_sentence_starts(reading, so_far)
            checked = len(so_far)


def test_a_reading_of_another_text_starts_again():
    reading = enforce.Reading("Card &#52")
    reading.update("Something else entirely. Then &#46; more")
    fresh = enforce.Reading("Something else entirely. Then &#46; more")
    assert (reading.text, reading.starts) == (fresh.text, fresh.starts)
    assert reading.last_sentence_start() == fresh.last_sentence_start() == len("Something else entirely. Then &#46; ")


class FromScratchGuard(enforce.OutputGuard):
    """Reads the whole answer again at every check (what the incremental reading must equal)."""

    def check(self, text_so_far):
        self._reading = enforce.Reading()
        return super().check(text_so_far)

    def shown(self, text_so_far):
        self._reading = enforce.Reading()
        return super().shown(text_so_far)


class LegacyGuard(enforce.OutputGuard):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reading = LegacyReading()


POLICIES = {
    "topics and blocked card": {
        "denied_topics": [{"name": "Investment advice", "examples": ["which stocks should I buy now"]}],
        "entities": {"card": "block", "email": "redact"},
        "output_pii": True,
    },
    "redacted card": {"entities": {"card": "redact", "email": "redact", "phone": "redact"}, "output_pii": True},
    "blocked term": {"blocked_terms": ["nightingale expansion"], "output_pii": False},
}
# Which answers each policy stops mid-stream.
STOPPED = {
    "topics and blocked card": {
        "abbreviations",
        "decimal card",
        "hex card",
        "named and sentence entities",
        "references without ;",
    },
    "redacted card": set(),
    "blocked term": {"blocked term"},
}


def stream(guards: list[enforce.OutputGuard], parts: list[str]) -> list[tuple]:
    """What each guard says at each delta (its verdict, what it cleared, its windows, whether
    a sentence held it, what it shows), until one stops the stream."""
    steps = []
    for so_far in prefixes(parts):
        steps.append([(g.check(so_far), g.cleared, g.windows, g._unjudged, g.shown(so_far)) for g in guards])
        if steps[-1][0][0] is not None:
            break
    return steps


@pytest.mark.django_db
@pytest.mark.parametrize("policy", list(POLICIES))
def test_the_output_guard_streams_as_it_did(world, policy):
    set_tier_policy(world.a.tenant.tier, POLICIES[policy])
    rng = random.Random(policy)
    stopped, relayed_in_part = set(), set()
    with tenant_context(world.a.tenant):
        for name, text in ANSWERS.items():
            for parts in list(chunkings(text, rng, 2))[2:]:
                kinds = (enforce.OutputGuard, FromScratchGuard, LegacyGuard)
                steps = stream([kind(world.a.tenant, invocation=None) for kind in kinds], parts)
                assert all(seen[0] == seen[1] == seen[2] for seen in steps), (policy, name)
                stopped |= {name for seen in steps[-1:] if seen[0][0] is not None}
                relayed_in_part |= {name for seen in steps if 0 < min(seen[0][1], len(seen[0][4])) < len(text)}
    assert stopped == STOPPED[policy]
    assert len(relayed_in_part) > 5, relayed_in_part


class CountingDetectors:
    """enforce's view of the detectors module, counting the characters of the answer that
    enforce's own bookkeeping (not the checks it runs) decodes or searches for sentence ends."""

    def __init__(self):
        self.read = 0

    def __getattr__(self, name):
        return getattr(detectors, name)

    def canonical(self, text):
        self.read += len(text)
        return detectors.canonical(text)

    def decode(self, text, pos=0, units=None):
        self.read += len(text) - pos
        return detectors.decode(text, pos, units)

    def sentence_starts(self, text, lo=0, hi=None):
        self.read += len(text)
        return detectors.sentence_starts(text, lo, hi)

    def ends_sentence(self, text, at):
        self.read += min(at, detectors.END_CONTEXT) + 1
        return detectors.ends_sentence(text, at)


@pytest.mark.django_db
def test_a_long_streamed_answer_is_read_once_not_again_at_every_check(world, monkeypatch):
    """Each check reads the text added since the last one (and a unit's length before it),
    not the last kilobyte of the answer again: the work is linear in the answer's length."""
    set_tier_policy(world.a.tenant.tier, POLICIES["topics and blocked card"])
    counting = CountingDetectors()
    monkeypatch.setattr(enforce, "detectors", counting)
    answer = ("Refunds, e.g. for shoes, take 3.5 days in the U.S. and Canada. " + FILLER) * 60
    with tenant_context(world.a.tenant):
        guard = enforce.OutputGuard(world.a.tenant, invocation=None)
        for so_far in prefixes([answer[i : i + 40] for i in range(0, len(answer), 40)]):
            assert guard.check(so_far) is None
            guard.shown(so_far)
    assert guard.windows > 100 and guard.cleared > len(answer) - 200
    assert counting.read < 4 * len(answer), (counting.read, len(answer))


@pytest.mark.parametrize("seed", range(5))
def test_a_full_stop_ends_a_sentence_as_the_pattern_says(seed):
    """detectors.ends_sentence skips the pattern where it cannot match (nothing a word can
    end with before the full stop, or seven letters): the same answers as the pattern."""
    rng = random.Random(seed)
    alphabet = [*"aBz. \n\t1_-,", "e.g.", "Dr", "etc", "approx", "ſt", "K", "İ", "ı", "²", "½", "٣", "Ж", "Со", "word"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) + ". "
        for match in detectors.SENTENCE_END.finditer(text):
            at = match.start()
            by_pattern = text[at] != "." or not detectors._NOT_AN_END.search(text, max(0, at - 32), at + 1)
            assert detectors.ends_sentence(text, at) == by_pattern, (text, at)
