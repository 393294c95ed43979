"""Detectors of the builtin engine: pure functions over text, no Django, no I/O.

Each detector yields `Finding`s (entity key, span). Patterns are compiled once at
import; validators (Luhn, IBAN mod-97, SSN area rules, IPv4 octets) turn "looks
like" into "is", which is what keeps order numbers, ISBNs and timestamps out.
Term lists (blocked terms, other tenants' markers) use an Aho–Corasick automaton
(pyahocorasick), so 1,000 terms cost one pass over the text, not 1,000.
"""

from __future__ import annotations

import functools
import hashlib
import html
import ipaddress
import itertools
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import ahocorasick
import regex as safe_regex

# --- the canonical form every detector matches against --------------------------------------
#
# What the browser shows is what counts, not the code points sent: a zero-width space inside
# a word, full-width letters ("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ"), a Cyrillic "а" among Latin letters,
# an HTML entity ("&#64;") or a Markdown escape ("\@": the chat renders Markdown) all read as
# the plain character. So every detector matches against one canonical copy of the text:
# entities and escapes decoded, NFKC, format characters (Unicode category Cf) and marks no
# browser draws (_INVISIBLE_MARKS) dropped, other scripts' decimal digits as ASCII digits,
# look-alike letters as the Latin ones. The copy is only ever matched against: what is
# stored and shown is the original, and `Canonical.span` maps a span of the copy back to the
# characters of the original that produced it, so a redaction replaces the right characters
# of the original.
#
# Look-alike letters are mapped only where they pose as Latin: in a word that also holds a
# Latin letter ("Вravo", "jоhn"), or anywhere in a text with no other letter of their script
# (an all-Cyrillic "ѕех" in English text). A Russian sentence keeps its Cyrillic words, so
# "сор" (rubbish) is not the English "cop".

# Cyrillic, Greek and a few other letters that render like a Latin letter.
_CONFUSABLE_PAIRS = (
    "аa вb сc еe һh іi јj кk оo рp ѕs уy хx ԁd ԛq ԝw ӏl үy ҫc ꙇi "
    "АA ВB СC ЕE НH ІI ЈJ КK МM ОO РP ТT ХX ЅS ҮY ԀD ԚQ ԜW ӀI ꙆI "
    "αa βb εe ιi κk νv οo ρp τt υu χx γy ϲc ϳj "
    "ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX ϹC ͿJ "
    "օo սu ɑa ɡg ıi ȷj ʏy"
)
_CONFUSABLES = {pair[0]: pair[1] for pair in _CONFUSABLE_PAIRS.split()}
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
_CONFUSABLE_CLASS = "".join(sorted(_CONFUSABLES))
# A word holding a Latin letter; a letter of the look-alikes' scripts that is no look-alike
# (its presence says the text is written in that script).
_LATIN_WORD = re.compile(r"\b[^\W\d_]*[A-Za-z][^\W\d_]*")
_LATIN_LETTER = re.compile("[A-Za-z]")
_CONFUSABLE = re.compile(f"[{_CONFUSABLE_CLASS}]")
_OWN_SCRIPT_LETTER = re.compile(rf"(?![{_CONFUSABLE_CLASS}])(?=[^\W\d_])[\u0370-\u03ff\u0400-\u052f\u0530-\u058f]")


# Nonspacing marks (category Mn) that no browser draws, default-ignorable as the format
# characters are: variation selectors, the combining grapheme joiner, Mongolian free variation
# selectors, Khmer inherent vowels. Dropped like them ("bad\ufe0fword" shows "badword").
_INVISIBLE_MARKS = frozenset(
    map(chr, (0x034F, 0x17B4, 0x17B5, *range(0x180B, 0x180E), 0x180F, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)))
)


def _is_odd(char: str) -> bool:
    """Changes in canonical form whatever NFKC says: a character of Unicode category Cf
    (zero-width spaces and joiners, soft hyphen, bidi controls, tags…) or an invisible mark
    (_INVISIBLE_MARKS), or a decimal digit of a script other than ASCII."""
    return char in _INVISIBLE_MARKS or (unicodedata.category(char) in ("Cf", "Nd") and not char.isascii())


@functools.cache
def _odd_chars() -> tuple[re.Pattern, frozenset[str]]:
    """The odd characters of the Basic Multilingual Plane as one class (`re` scans it at C
    speed), and those beyond it as a set (a class with them would be scanned range by range)."""
    bmp = "".join(re.escape(chr(c)) for c in range(0x80, 0x10000) if _is_odd(chr(c)))
    astral = frozenset(chr(c) for c in (*range(0x10000, 0x20000), *range(0xE0000, 0xE1000)) if _is_odd(chr(c)))
    return re.compile(f"[{bmp}]"), astral


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


# The units of the original text that may read as something else: an HTML entity, as a
# CommonMark renderer decodes them (numeric ones, with or without ";" as browsers take them;
# named ones with it), a Markdown backslash escape of ASCII punctuation ("\@" shows "@"), and
# runs of non-ASCII characters (see _changes).
_UNITS = re.compile(
    r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)|\\[!-/:-@\[-`{-~]|[^\x00-\x7f]+"
)


@dataclass(frozen=True)
class Canonical:
    text: str
    # For each character of `text`, where the characters of the original that produced it
    # start and end; None when `text` is the original itself.
    starts: list[int] | None = None
    ends: list[int] | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original that the span [start, end) of the canonical text covers."""
        if self.starts is None:
            return start, end
        if end <= start:
            at = self.starts[start] if start < len(self.starts) else (self.ends[-1] if self.ends else 0)
            return at, at
        return self.starts[start], self.ends[end - 1]


@functools.lru_cache(maxsize=4096)
def _canon_char(char: str) -> str:
    if unicodedata.category(char) == "Cf" or char in _INVISIBLE_MARKS:
        return ""
    out = unicodedata.normalize("NFKC", char)
    if not out.isascii():
        out = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in out)
    return out


def _changes(run: str) -> bool:
    """Whether characters of `run` change in canonical form, other than look-alike letters
    (mostly not, for text in another script)."""
    if not unicodedata.is_normalized("NFKC", run):
        return True
    bmp, astral = _odd_chars()
    if bmp.search(run):
        return True
    return _ASTRAL.search(run) is not None and not astral.isdisjoint(_ASTRAL.findall(run))


def canonical(text: str) -> Canonical:
    """The canonical copy of `text` the detectors match against (see above)."""
    if len(text) <= CACHED_TEXT_CHARS:
        return _recent_canonical(text)
    return _canonical(text)


@functools.lru_cache(maxsize=16)
def _recent_canonical(text: str) -> Canonical:
    return _canonical(text)


def _canonical(text: str) -> Canonical:
    decoded, starts, ends = decode(text)
    return Canonical(_confusables(decoded), starts, ends)


def decode(text: str, pos: int = 0, units: list[tuple[int, int]] | None = None):
    """text[pos:] in canonical form but for look-alike letters (which depend on the whole
    text, see _confusables; they change no length): (decoded, starts, ends), where starts and
    ends map each decoded character onto positions in `text`, or are None when the decoded
    text is text[pos:] itself. Each entity or escape decoded is added to `units` as its span.
    Decoding starts afresh at `pos`: the same as decoding all of `text` wherever `pos` is not
    inside an entity or an escape (none looks behind it; a run of other characters is read
    character by character). enforce.Reading extends its copy of a streamed answer so."""
    if text.find("&", pos) < 0 and text.find("\\", pos) < 0:
        rest = text[pos:] if pos else text
        if rest.isascii() or not _changes(rest):  # the usual case: one C-speed look at the whole text
            return rest, None, None
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    last, changed = pos, False
    for m in _UNITS.finditer(text, pos):
        unit = m.group()
        if unit[0] in "&\\":
            decoded = html.unescape(unit) if unit[0] == "&" else unit[1]
            if decoded == unit:
                continue  # not an entity html knows
            decoded = "".join(map(_canon_char, decoded))
            changed = True
            if units is not None:
                units.append(m.span())
            pieces.extend((text[last : m.start()], decoded))
            starts.extend(range(last, m.start()))
            ends.extend(range(last + 1, m.start() + 1))
            starts.extend([m.start()] * len(decoded))  # every character of it stands for the whole unit
            ends.extend([m.end()] * len(decoded))
            last = m.end()
            continue
        if not _changes(unit):
            continue
        changed = True
        pieces.append(text[last : m.start()])
        starts.extend(range(last, m.start()))
        ends.extend(range(last + 1, m.start() + 1))
        outs = list(map(_canon_char, unit))
        pieces.extend(outs)
        if "" not in outs and sum(map(len, outs)) == len(outs):  # one character for one
            starts.extend(range(m.start(), m.end()))
            ends.extend(range(m.start() + 1, m.end() + 1))
        else:
            for offset, out in enumerate(outs, m.start()):
                starts.extend([offset] * len(out))
                ends.extend([offset + 1] * len(out))
        last = m.end()
    if not changed:
        return (text[pos:] if pos else text), None, None
    pieces.append(text[last:])
    starts.extend(range(last, len(text)))
    ends.extend(range(last + 1, len(text) + 1))
    return "".join(pieces), starts, ends


# What decides how _confusables maps a text: whether it holds a look-alike letter, a letter of
# their scripts that is none, a Latin letter (each pattern matches one character).
LOOKALIKE_CLUES = {"lookalike": _CONFUSABLE, "own_script": _OWN_SCRIPT_LETTER, "latin": _LATIN_LETTER}


def lookalikes_as(text: str, lookalike: bool, own_script: bool, latin: bool) -> str:
    """`text`, a part of a longer text that holds each LOOKALIKE_CLUES kind of letter or not
    as said, with its look-alike letters mapped as _confusables maps them in that text (words
    are mapped whole: a word cut at the start of the part may be mapped otherwise)."""
    if not lookalike:
        return text
    if not own_script:
        return text.translate(_CONFUSABLE_TABLE)
    if not latin:
        return text
    return _LATIN_WORD.sub(lambda m: m.group().translate(_CONFUSABLE_TABLE), text)


def _confusables(text: str) -> str:
    """Look-alike letters as Latin ones where they pose as Latin (length-preserving)."""
    if text.isascii():
        return text
    if not _CONFUSABLE.search(text):
        return text
    if not _OWN_SCRIPT_LETTER.search(text):
        return text.translate(_CONFUSABLE_TABLE)
    if not _LATIN_LETTER.search(text):
        return text
    return _LATIN_WORD.sub(lambda m: m.group().translate(_CONFUSABLE_TABLE), text)


# --- PII entities ------------------------------------------------------------------------

ENTITIES: dict[str, str] = {
    "email": "Email address",
    "phone": "Phone number",
    "card": "Payment card number (Luhn-checked)",
    "cvv": "Card security code next to card data",
    "ssn": "US Social Security number",
    "iban": "IBAN (checksum-verified)",
    "ip_address": "IP address",
    "date_of_birth": "Date of birth",
    "mrn": "Medical record number",
    "aws_access_key": "AWS access key id",
    "secret": "Secrets: private keys, API tokens, passwords",
}

PLACEHOLDERS: dict[str, str] = {key: f"[{key.upper()}]" for key in ENTITIES}


@dataclass(frozen=True)
class Finding:
    entity: str  # an ENTITIES key, or "custom:<name>"
    start: int
    end: int


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")

# North American numbers with separators (555-123-4567, (555) 123 4567, 555.123.4567) and
# international numbers that start with "+" and a country code. Bare digit runs are
# left alone on purpose: they are far more often order numbers and ids.
_PHONE_NANP = re.compile(r"(?<![\w+/.-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w/-]|\.\d)")
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?){2,6}(?![\w-])")
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp)\b[\s.:#-]{0,4}(\d[\d\s.-]{7,14}\d)(?!\w)", re.I
)

_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9]|22)|3(?:0[0-5]|[68])|35)")
# A Luhn-valid number is still not a card when the text says what it is: an order or
# tracking number, or the tail of an IBAN ("DE89 3704 …").
_CARD_NOT_BEFORE = re.compile(
    r"(?:\b(?:order|invoice|tracking|reference|ref|ticket|confirmation|account|iban)\b(?:\s*(?:number|no\.?|#|id))?\s*(?:is|:|#)?\s*|\b[A-Z]{2}\d{2}\s?)$",
    re.I,
)
_CVV = re.compile(
    r"\b(?:cvv2?|cvc2?|cid|csc|security code|card code|card verification(?: code| value)?)\b\W{0,3}(\d{3,4})\b", re.I
)

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_CONTEXT = re.compile(r"\b(?:ssn|social security(?: number| no\.?)?)\b\W{0,4}(\d{9})\b", re.I)

_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)(?![A-Za-z0-9])")
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "AE": 23, "SA": 24, "IL": 23, "BR": 29,
}  # fmt: skip

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{6,39}(?![\w:])")
_VERSION_BEFORE = re.compile(
    r"(?:\bv|version|ver\.?|release|build|chapter|section|sec\.|table|figure|fig\.|§|step|part|clause|article)\s*$",
    re.I,
)

_DATE = r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)?\d{2}|(?:19|20)\d{2}[/.-]\d{1,2}[/.-]\d{1,2}|\d{1,2}(?:st|nd|rd|th)? (?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,? (?:19|20)\d{2}|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.? \d{1,2}(?:st|nd|rd|th)?,? (?:19|20)\d{2})"  # noqa: E501
_DOB = re.compile(
    r"\b(?:dob|d\.o\.b\.?|date of birth|birth ?date|birthday|born(?: on)?)\b\W{0,4}(" + _DATE + r")(?!\d)", re.I
)

_MRN = re.compile(
    # (?<!\[): the label inside a "[MRN]" placeholder is not a label (redaction stays idempotent).
    r"(?<!\[)\b(?:mrn|medical record(?: number| no\.?| #)?|patient (?:id|number|no\.?)|chart (?:number|no\.?))\b\W{0,4}([A-Z0-9][A-Z0-9-]{4,14}[A-Z0-9])\b",
    re.I,
)

_AWS_KEY = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")
_SECRETS = [
    re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )?PRIVATE KEY-----|$)"),
    re.compile(r"(?<![\w])gh[pousr]_[A-Za-z0-9]{36,}(?![\w])"),
    re.compile(r"(?<![\w])github_pat_[A-Za-z0-9_]{40,}(?![\w])"),
    re.compile(r"(?<![\w])xox[abprs]-[A-Za-z0-9-]{10,}(?![\w])"),
    re.compile(r"(?<![\w])sk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}(?![\w-])"),
    re.compile(r"(?<![\w])(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}(?![\w])"),
    re.compile(r"(?<![\w])AIza[0-9A-Za-z_-]{35}(?![\w-])"),
    re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-])"),
    # A value after a key name that says it is secret: aws_secret_access_key = …, password: …
    re.compile(
        r"(?i)\b(?:aws_secret_access_key|secret[_ ]?key|client[_ ]?secret|api[_ ]?key|access[_ ]?token|auth[_ ]?token|password|passwd|pwd)\b[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{8,})"
    ),
]


# The keyword-led patterns can only match where one of their cue words occurs (every
# detector is handed the folded copy; the structured ones have no use for it). Looking for
# the cues in one case-folded copy of the text (a C-speed `in` each) skips the regex scan of
# text that has none. The copy folds as re.IGNORECASE matches these ASCII cues: lower(), and
# İ and ı as "i", ſ as "s" (the only characters whose case-insensitive match is an ASCII
# letter while their lower() is not one).
_FOLD = str.maketrans({"İ": "i", "ı": "i", "ſ": "s"})
_CVV_CUES = ("cvv", "cvc", "cid", "csc", "security code", "card code", "card verification")
_SSN_CUES = ("ssn", "social security")
_DOB_CUES = ("dob", "d.o.b", "date of birth", "birth", "born")
_MRN_CUES = ("mrn", "medical record", "patient", "chart")
_PHONE_CUES = ("phone", "tel", "mobile", "cell", "call", "fax", "whatsapp")
_AWS_KEY_CUES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "ABIA", "ACCA")


def _fold(text: str) -> str:
    return text.translate(_FOLD).lower()


def _cued(haystack: str, cues: tuple[str, ...]) -> bool:
    return any(cue in haystack for cue in cues)


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA rules: area 000, 666 and 900–999 are never issued; group 00 and serial 0000 neither."""
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _cards(text: str) -> Iterator[Finding]:
    for m in _CARD.finditer(text):
        # The run may carry a neighbour's digits ("4242 … 4242 12/29", "qty 12 4111 …"): try the
        # whole run, then shorter runs of whole digit groups, longest first.
        groups = [(g.start() + m.start(), g.end() + m.start()) for g in re.finditer(r"\d+", m.group())]
        candidates = sorted(
            ((i, j) for i in range(len(groups)) for j in range(i, len(groups))), key=lambda ij: ij[0] - ij[1]
        )
        for i, j in candidates:
            start, end = groups[i][0], groups[j][1]
            digits = re.sub(r"[ -]", "", text[start:end])
            if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_ok(digits) and len(set(digits)) > 1:
                if not _CARD_NOT_BEFORE.search(text[max(0, start - 30) : start]):
                    yield Finding("card", start, end)
                break


def _cvvs(text: str, folded: str, cards: list[Finding]) -> Iterator[Finding]:
    if _cued(folded, _CVV_CUES):
        for m in _CVV.finditer(text):
            yield Finding("cvv", m.start(1), m.end(1))
    # A bare 3–4 digit code right after a card number ("4111 1111 1111 1111 12/27 123").
    for card in cards:
        tail = text[card.end : card.end + 24]
        m = re.match(r"(?:\s*(?:exp\.?|expires)?\s*\d{2}/\d{2,4})?[\s,;]+(\d{3,4})(?![\w\-./])", tail, re.I)
        if m:
            yield Finding("cvv", card.end + m.start(1), card.end + m.end(1))


def _ssns(text: str, folded: str) -> Iterator[Finding]:
    for m in _SSN.finditer(text):
        if ssn_ok(m.group(1), m.group(3), m.group(4)):
            yield Finding("ssn", m.start(), m.end())
    if not _cued(folded, _SSN_CUES):
        return
    for m in _SSN_CONTEXT.finditer(text):
        raw = m.group(1)
        if ssn_ok(raw[:3], raw[3:5], raw[5:]):
            yield Finding("ssn", m.start(1), m.end(1))


def _ibans(text: str, folded: str) -> Iterator[Finding]:
    for m in _IBAN.finditer(text):
        if iban_ok(m.group(1)):
            yield Finding("iban", m.start(1), m.end(1))


def _ips(text: str, folded: str) -> Iterator[Finding]:
    for m in _IPV4.finditer(text):
        parts = m.group().split(".")
        if all(int(p) <= 255 and (p == "0" or not p.startswith("0")) for p in parts):
            if _VERSION_BEFORE.search(text[max(0, m.start() - 12) : m.start()]):
                continue
            yield Finding("ip_address", m.start(), m.end())
    if text.count(":") < 2:  # an IPv6 address has at least two
        return
    for m in _IPV6.finditer(text):
        try:
            ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        if not any(c.isalpha() for c in m.group()) and m.group().count(":") < 3:
            continue  # 10:30:00 is a time
        yield Finding("ip_address", m.start(), m.end())


def _phones(text: str, folded: str) -> Iterator[Finding]:
    for pattern in (_PHONE_NANP, _PHONE_INTL) if "+" in text else (_PHONE_NANP,):
        for m in pattern.finditer(text):
            digits = sum(c.isdigit() for c in m.group())
            if 10 <= digits <= 15:
                yield Finding("phone", m.start(), m.end())
    if not _cued(folded, _PHONE_CUES):
        return
    for m in _PHONE_CONTEXT.finditer(text):
        digits = sum(c.isdigit() for c in m.group(1))
        if 8 <= digits <= 15:
            yield Finding("phone", m.start(1), m.end(1))


def _simple(entity: str, pattern: re.Pattern, group: int = 0, *, cues=None, literal_cues=None) -> callable:
    """A pattern's findings; with `cues`, only when one occurs in the folded text, with
    `literal_cues`, only when one occurs in the text as it is."""

    def detect(text: str, folded: str) -> Iterator[Finding]:
        if (cues and not _cued(folded, cues)) or (literal_cues and not _cued(text, literal_cues)):
            return
        for m in pattern.finditer(text):
            yield Finding(entity, m.start(group), m.end(group))

    return detect


# Literal hints: a secret pattern only runs when its hint occurs at all (a C-speed `in`),
# so ordinary prose pays for none of the regexes.
_SECRET_HINTS = ("PRIVATE KEY", "_", "github_pat_", "xox", "sk-", "_", "AIza", "eyJ", None)
_SECRET_KEYWORDS = ("secret", "key", "token", "password", "passwd", "pwd")


def _secrets(text: str, folded: str) -> Iterator[Finding]:
    for hint, pattern in zip(_SECRET_HINTS, _SECRETS, strict=True):
        if hint is None:
            if not _cued(folded, _SECRET_KEYWORDS):
                continue
        elif hint not in text:
            continue
        for m in pattern.finditer(text):
            group = 1 if pattern.groups else 0
            if group and not _looks_secret(m.group(1)):
                continue  # "password: forgotten" names no password
            yield Finding("secret", m.start(group), m.end(group))


def _looks_secret(value: str) -> bool:
    """A value after `password:` / `api_key=` counts when it is not a plain word: it has a
    digit or a symbol, or upper case after its first letter."""
    return bool(re.search(r"[\d\W_]", value)) or any(c.isupper() for c in value[1:])


_DETECTORS = {
    "email": _simple("email", _EMAIL, literal_cues=("@",)),
    "phone": _phones,
    "ssn": _ssns,
    "iban": _ibans,
    "ip_address": _ips,
    "date_of_birth": _simple("date_of_birth", _DOB, 1, cues=_DOB_CUES),
    "mrn": _simple("mrn", _MRN, 1, cues=_MRN_CUES),
    "aws_access_key": _simple("aws_access_key", _AWS_KEY, literal_cues=_AWS_KEY_CUES),
    "secret": _secrets,
}


# A policy's PII check and the excerpts of what it found (engine.excerpts) ask the same
# question of the same text back to back when the policy wants every entity; the second
# answer comes from a small cache. Findings are immutable; long texts are not kept.
CACHED_TEXT_CHARS = 64_000


def find_entities(text: str, wanted: Iterable[str]) -> list[Finding]:
    """Every finding of the wanted builtin entities, overlaps resolved (longest, then earliest)."""
    wanted = frozenset(wanted)
    if len(text) <= CACHED_TEXT_CHARS:
        return list(_recent_findings(text, wanted))
    return list(_find_entities(text, wanted))


def _in_original(canon: Canonical, findings: Iterable[Finding]) -> list[Finding]:
    """Findings in the canonical copy as spans of the original text."""
    if canon.starts is None:
        return list(findings)
    return [Finding(f.entity, *canon.span(f.start, f.end)) for f in findings]


@functools.lru_cache(maxsize=16)
def _recent_findings(text: str, wanted: frozenset[str]) -> tuple[Finding, ...]:
    return _find_entities(text, wanted)


def _find_entities(original: str, wanted: frozenset[str]) -> tuple[Finding, ...]:
    canon = canonical(original)
    text = canon.text
    folded = _fold(text)
    findings: list[Finding] = []
    cards: list[Finding] = []
    if "card" in wanted or "cvv" in wanted:
        cards = list(_cards(text))
        if "card" in wanted:
            findings.extend(cards)
        if "cvv" in wanted:
            findings.extend(_cvvs(text, folded, cards))
    for key, detect in _DETECTORS.items():
        if key in wanted:
            findings.extend(detect(text, folded))
    return tuple(resolve_overlaps(_in_original(canon, findings)))


# Which entity wins when two findings cover the same characters: the structured,
# validated ones first (a card is not a phone number, an IBAN is not a secret).
_PRIORITY = {"card": 0, "iban": 1, "ssn": 2, "aws_access_key": 3, "secret": 4, "email": 5, "cvv": 6}


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    ordered = sorted(findings, key=lambda f: (_PRIORITY.get(f.entity, 9), -(f.end - f.start), f.start))
    taken: list[Finding] = []
    for finding in ordered:
        if finding.end <= finding.start:
            continue
        if all(finding.end <= t.start or finding.start >= t.end for t in taken):
            taken.append(finding)
    return sorted(taken, key=lambda f: f.start)


# --- custom regex entities ----------------------------------------------------------------

CUSTOM_REGEX_TIMEOUT_S = 0.05  # per pattern per text: a catastrophic pattern costs 50 ms, not a worker


class CustomPatternError(ValueError):
    pass


def compile_custom(pattern: str):
    """Compile an admin's pattern with the `regex` package (it honours `timeout=`)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise CustomPatternError("Enter a pattern.")
    if len(pattern) > 500:
        raise CustomPatternError("Patterns are limited to 500 characters.")
    try:
        compiled = safe_regex.compile(pattern, safe_regex.V0)
    except safe_regex.error as exc:
        raise CustomPatternError(f"Not a valid regular expression: {exc}") from None
    try:
        if compiled.search("", timeout=CUSTOM_REGEX_TIMEOUT_S) is not None:
            raise CustomPatternError("The pattern matches empty text; it would flag every message.")
        # A quick adversarial probe: nested quantifiers blow up on long near-matches.
        compiled.search("a" * 5000 + "!", timeout=CUSTOM_REGEX_TIMEOUT_S)
        compiled.search("1" * 5000 + "x", timeout=CUSTOM_REGEX_TIMEOUT_S)
    except TimeoutError:
        raise CustomPatternError("The pattern takes too long on long text (catastrophic backtracking).") from None
    return compiled


def find_custom(text: str, name: str, compiled) -> list[Finding]:
    """May raise TimeoutError: the caller treats it as a backend error (fail open/closed)."""
    canon = canonical(text)
    return _in_original(
        canon,
        (
            Finding(f"custom:{name}", m.start(), m.end())
            for m in compiled.finditer(canon.text, timeout=CUSTOM_REGEX_TIMEOUT_S)
            if m.end() > m.start()
        ),
    )


# --- normalisation and term lists (Aho–Corasick) --------------------------------------------

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "!": "i", "|": "l"})  # fmt: skip
_WORD = re.compile(r"[^\W_]+(?:[.\-_*'’@$!|][^\W_]+)*", re.UNICODE)
_SPACING = re.compile(r"[\s.\-_*]")
_SPACED_CHAIN = re.compile(r"(?<![^\W_])(?:[^\W_][\s.\-_*]{1,2}){2,}[^\W_](?![^\W_])", re.UNICODE)


def strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


_INNER_PUNCTUATION = str.maketrans("", "", ".-_*'’")


def _norm_token(token: str) -> str:
    if token.isalpha():
        return token
    token = token.translate(_INNER_PUNCTUATION)
    if any(c.isalpha() for c in token):
        token = token.translate(_LEET)
    return token


def normalise_words(text: str) -> str:
    """Casefold, strip accents, collapse spaced-out letters, undo simple leetspeak.

    The result is space-separated words padded with spaces, so a whole-word match
    is a search for " term "."""
    text = strip_accents(text.casefold())
    text = _SPACED_CHAIN.sub(lambda m: _SPACING.sub("", m.group()), text)
    return " " + " ".join(_norm_token(t) for t in _WORD.findall(text)) + " "


def normalise_term(term: str) -> str:
    return normalise_words(term).strip()


class TermMatcher:
    """Whole-word, case/accent/obfuscation-insensitive matching of many terms in one pass."""

    def __init__(self, terms: Iterable[str]):
        self._automaton = ahocorasick.Automaton()
        self.size = 0
        for term in terms:
            key = normalise_term(term)
            if key:
                self._automaton.add_word(f" {key} ", term)
                self.size += 1
        if self.size:
            self._automaton.make_automaton()

    def find(self, text: str) -> list[str]:
        if not self.size:
            return []
        normalised = normalise_words(canonical(text).text)
        return list(dict.fromkeys(term for _end, term in self._automaton.iter(normalised)))


# The version of how markers are found in a text (written_in): 2 = canonical form, whole words;
# 3 = the canonical form drops invisible marks (_INVISIBLE_MARKS) too.
MARKER_RULES = "3"


# Short and common markers. Another tenant's name or slug blocks every answer that holds it,
# so a short or common one would block ordinary answers ("the", "box", "ibm" in
# "ibm-style"). The rule:
#   * fewer than 3 characters ("AB"): never a marker;
#   * a common word (_STOPWORDS: "the", "this", "about"…): never a marker, in any case;
#   * shorter than MIN_CASELESS_MARKER (3 or 4 characters): a marker only when it holds a
#     capital letter ("IBM", "Box", "Acme"), and then only spelled as the tenant spells it or
#     all in capitals ("Box", "BOX", not "box"), as a whole word. All in lower case (a slug
#     such as "box") it is no marker at all; the tenant's name still is one;
#   * MIN_CASELESS_MARKER characters and more: whole words in any case.
# The canary (a long random value) and the tenant_id forms are long: always markers.
MIN_CASELESS_MARKER = 5


class MarkerMatcher:
    """Other tenants' markers (names, slugs, canaries): case-insensitive whole-word spans
    (short ones in their own case, see MIN_CASELESS_MARKER).

    Values map to the tenant ids that own them, so one automaton serves every tenant:
    a hit counts only when some owner is not the tenant asking."""

    def __init__(self, markers: dict[str, set[int]]):
        self._automaton = ahocorasick.Automaton()
        grouped: dict[str, dict[str | None, set[int]]] = {}
        for marker, owners in markers.items():
            key = marker.casefold()
            if len(key) < 3 or key in _STOPWORDS:
                continue
            if len(key) >= MIN_CASELESS_MARKER:
                forms: tuple[str | None, ...] = (None,)  # any case
            elif marker != marker.lower():
                forms = (marker, marker.upper())
            else:
                continue
            for form in forms:
                grouped.setdefault(key, {}).setdefault(form, set()).update(owners)
        for key, by_form in grouped.items():
            if None in by_form:
                self._automaton.add_word(key, (key, frozenset(by_form[None]), None))
            else:
                cased = {form: frozenset(owners) for form, owners in by_form.items()}
                self._automaton.add_word(key, (key, None, cased))
        keys = list(grouped)
        self.size = len(keys)
        # The longest marker, in the characters the detectors read: a streamed answer's
        # check reads that much of the text before each new delta again (enforce.OutputGuard).
        self.longest = max(map(len, keys), default=0)
        if self.size:
            self._automaton.make_automaton()
        self._keys = keys
        self._by_skeleton = None
        # Equal for two matchers of the same markers, in any process and after a restart (it
        # is stored with each document's markers: agents.knowledge.models.Document), so what
        # was derived from a tenant's writing against them need not be derived again. The
        # rules of matching are part of it (MARKER_RULES): when they change, what was derived
        # with the old ones is stale and read again as well.
        self.fingerprint = hashlib.sha256("\n".join([MARKER_RULES, *sorted(set(keys))]).encode()).hexdigest()[:32]

    def written_in(self, texts) -> frozenset[str]:
        """The markers (casefolded, as find() gives them) that `texts` hold in any spelling:
        their skeleton is in the skeleton of one of the texts, as whole words (see
        WrittenWords). Like find(), whoever owns them; the caller asks about the markers it
        found in an answer."""
        if self._by_skeleton is None:
            automaton = ahocorasick.Automaton()
            by_skeleton: dict[str, list[str]] = {}
            for key in self._keys:
                if folded := skeleton(key):
                    by_skeleton.setdefault(folded, []).append(key)
            for folded, keys in by_skeleton.items():
                automaton.add_word(folded, (len(folded), tuple(keys)))
            if by_skeleton:
                automaton.make_automaton()
            self._by_skeleton = automaton if by_skeleton else False
        if not self._by_skeleton:
            return frozenset()
        found: set[str] = set()
        for text in texts:
            written = WrittenWords(text)
            for end, (length, keys) in self._by_skeleton.iter(written.forwards):
                if written.bounded(end + 1 - length, end + 1):
                    found.update(keys)
        return frozenset(found)

    def find(self, text: str, tenant_id: int) -> list[tuple[int, int, str]]:
        """(start, end, marker) of each other tenant's marker in `text`, the marker casefolded."""
        if not self.size:
            return []
        canon = canonical(text)
        text = canon.text
        lowered = text.casefold()
        if len(lowered) != len(text):  # a few characters change length when casefolded
            lowered = text.lower()
        spans = []
        for end, (key, owners, cased) in self._automaton.iter(lowered):
            start = end - len(key) + 1
            before = lowered[start - 1] if start > 0 else " "
            after = lowered[end + 1] if end + 1 < len(lowered) else " "
            if before.isalnum() or after.isalnum():
                continue
            if cased is not None:  # a short marker: only in its own spelling
                owners = cased.get(text[start : end + 1])
            if owners is None or owners <= {tenant_id}:
                continue
            spans.append((*canon.span(start, end + 1), key))
        return spans


class WrittenWords:
    """The skeleton of a text (see skeleton()) with the places where its words met, to ask
    whether another skeleton is in it as whole words, forwards or backwards.

    Without the word boundaries the letters of "Bravo Inc" are in "Bravo Incubator" and in
    "bravo. Incidentally", though nobody wrote that name. A span of the skeleton counts only
    when it starts and ends where words met in the text (or at its ends): spelled letter by
    letter ("B R A V O  I N C"), every letter is a word, so the spelling still counts."""

    def __init__(self, text: str):
        folded = strip_accents(canonical(text).text.casefold()).translate(_LEET)
        words = [w if w.isalnum() else "".join(c for c in w if c.isalnum()) for w in _ALNUM_RUN.findall(folded)]
        self.forwards = "".join(words)
        self.backwards = self.forwards[::-1]
        bounds, at = {0}, 0
        for word in words:
            at += len(word)
            bounds.add(at)
        self._bounds = frozenset(bounds)
        self._length = at

    def bounded(self, start: int, end: int, *, backwards: bool = False) -> bool:
        if backwards:
            start, end = self._length - end, self._length - start
        return start in self._bounds and end in self._bounds

    def holds(self, key: str) -> bool:
        """Whether the skeleton `key` is in the text as whole words, forwards or backwards."""
        if not key:
            return False
        for haystack, backwards in ((self.forwards, False), (self.backwards, True)):
            start = haystack.find(key)
            while start >= 0:
                if self.bounded(start, start + len(key), backwards=backwards):
                    return True
                start = haystack.find(key, start + 1)
        return False


_ALNUM_RUN = re.compile(r"[^\W_]+")


def skeleton(text: str) -> str:
    """Letters and digits only, casefolded, without accents and with simple leetspeak undone:
    "B.r-á v0 Inc" and "bravo inc" are both "bravoinc". Used to ask whether a marker found in
    an answer was already in what someone wrote, whatever its spelling there."""
    folded = strip_accents(canonical(text).text.casefold()).translate(_LEET)
    return "".join(c for c in folded if c.isalnum())


# --- denied topics: offline similarity -----------------------------------------------------

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "from",
        "by",
        "with",
        "about",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "why",
        "when",
        "where",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "not",
        "no",
        "so",
        "than",
        "too",
        "very",
        "just",
        "please",
        "tell",
        "give",
        "get",
        "some",
        "any",
        "there",
        "here",
        "up",
        "out",
        "into",
        "over",
        "under",
        "again",
        "more",
        "most",
        "such",
        "only",
        "own",
        "same",
        "also",
        "let",
        "lets",
    ]
)
# Cosine of binary bags of stemmed content words, sentence vs example, with at least two
# shared words. 0.5 = e.g. 2 of 4 words shared on both sides; tuned on the bench set.
TOPIC_THRESHOLD = 0.5


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    for suffix in ("ings", "ing", "ies", "ied", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
    return word


_WORDS = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> frozenset[str]:
    words = set(_WORDS.findall(strip_accents(text.casefold())))
    return frozenset(_stem(w) for w in words if w not in _STOPWORDS and len(w) > 1)


# A sentence ends at ".", "!", "?", ";" or a line break followed by white space, except at
# the full stop of an abbreviation or of initials ("e.g.", "U.S.", "Dr."), an ellipsis, or a
# numbered list's marker ("1. "): there the sentence goes on, and a topic is judged on it whole.
_SENTENCE_END = re.compile(r"[.!?;\n]\s+")
_ABBREVIATIONS = "mr|mrs|ms|dr|prof|st|jr|sr|vs|etc|approx|ca|cf|no|nos|fig|vol|inc|ltd|co|corp|dept|est"
_NOT_AN_END = re.compile(
    rf"(?:(?<![^\W\d_])(?:[^\W\d_]\.)+|\b(?:{_ABBREVIATIONS})\.|\.\.|(?:^|\n)[ \t]*\d{{1,3}}\.)\Z", re.IGNORECASE
)


# How far before a full stop ends_sentence reads (an abbreviation, initials, a list marker).
END_CONTEXT = 32
SENTENCE_END = _SENTENCE_END


def ends_sentence(text: str, at: int) -> bool:
    """Whether the match of SENTENCE_END at `at` in `text` ends a sentence: it does unless it
    is the full stop of an abbreviation, initials, an ellipsis or a list marker. Reads
    text[at - END_CONTEXT - 1 : at + 1] (the one character more: what a word starts after)."""
    if text[at] != ".":
        return True
    before = text[at - 1] if at else ""
    # Every way not to end puts a letter, a digit or a full stop before it; and an abbreviation
    # or an initial is a word of 6 letters at most, after something that is not a letter.
    if not (before == "." or before.isalnum()) or (at >= 7 and text[at - 7 : at].isalpha()):
        return True
    return not _NOT_AN_END.search(text, max(0, at - END_CONTEXT), at + 1)


def sentence_starts(text: str, lo: int = 0, hi: int | None = None) -> list[int]:
    """Where in `text` each sentence after the first begins, for the ends in text[lo:hi]
    (the text as the detectors read it: see enforce.Reading for the raw text)."""
    return [
        m.end()
        for m in _SENTENCE_END.finditer(text, lo, len(text) if hi is None else hi)
        if ends_sentence(text, m.start())
    ]


def _sentences(text: str) -> list[str]:
    bounds = [0, *sentence_starts(text), len(text)]
    parts = [text[a:b].strip() for a, b in itertools.pairwise(bounds)]
    parts = [p for p in parts if p]
    return parts or [text]


class TopicMatcher:
    def __init__(self, topics: list[dict]):
        self.topics = []
        for topic in topics:
            examples = [content_words(e) for e in topic.get("examples", []) if e.strip()]
            name = content_words(topic.get("name", ""))
            examples = [e for e in examples if e]
            self.topics.append((topic.get("name", ""), examples, name))

    def find(self, text: str) -> list[tuple[str, float]]:
        if not self.topics:
            return []
        text = canonical(text).text
        # The whole text: a topic after padding is still the topic (a message may be 20,000
        # characters, an answer from a JSON runtime arrives whole).
        everything = content_words(text)
        candidates = [
            topic
            for topic in self.topics
            if (len(topic[2]) >= 2 and topic[2] <= everything)
            or any(len(everything & example) >= min(2, len(example)) for example in topic[1])
        ]
        if not candidates:  # the usual case: no sentence can reach the threshold
            return []
        windows = [content_words(s) for s in _sentences(text)]
        windows = [w for w in windows if w]
        hits = []
        for name, examples, name_words in candidates:
            best = 0.0
            for window in windows:
                if name_words and len(name_words) >= 2 and name_words <= window:
                    best = 1.0
                    break
                for example in examples:
                    shared = len(window & example)
                    # One shared word is chance ("buy milk" vs "which stocks should I buy"),
                    # unless the example is itself one word.
                    if shared >= min(2, len(example)):
                        best = max(best, shared / math.sqrt(len(window) * len(example)))
            if best >= TOPIC_THRESHOLD:
                hits.append((name, round(best, 2)))
        return hits


# --- prompt injection ---------------------------------------------------------------------

_INJECTION_RULES: list[tuple[str, float, re.Pattern]] = [
    (
        "ignore_previous",
        0.9,
        re.compile(
            r"\b(?:ignore|disregard|forget|skip|override|bypass|drop|abandon|discard)\b[\w\s,'-]{0,20}?\b(?:previous|prior|preceding|above|earlier|all|any|your|initial|original|system|existing|those|these)\b[\w\s,'-]{0,20}?\b(?:instructions?|prompts?|rules|directions|directives|guidelines|constraints|guardrails|programming|system prompt)\b",
            re.I,
        ),
    ),
    (
        "reveal_system_prompt",
        0.85,
        re.compile(
            r"\b(?:reveal|show|print|repeat|output|display|leak|dump|recite|spell out|share)\b[\w\s,'-]{0,30}?\b(?:system prompt|system message|hidden (?:prompt|instructions?)|initial (?:prompt|instructions?)|original instructions?|your instructions|developer message|pre-?prompt|your (?:rules|guidelines|prompt))\b"
            r"|\b(?:what(?: is|'s| are)|tell me|give me)\s+(?:your|ur)\s+(?:system prompt|system message|instructions|hidden prompt|initial prompt|rules|guidelines|prompt)\b"
            r"|\b(?:system prompt|hidden (?:prompt|instructions))\b[\w\s,—-]{0,20}\b(?:show|reveal|print|dump|display)\b",
            re.I,
        ),
    ),
    (
        "role_override",
        0.75,
        re.compile(
            r"\b(?:you are now|from now on,? you(?: are|'re| will (?:answer|act|be|respond))|act as an? (?:unrestricted|unfiltered|uncensored|evil|jailbroken)|pretend (?:to be|you are|you're) an? (?:unrestricted|unfiltered|uncensored|different|evil)|roleplay as an? (?:unrestricted|unfiltered|uncensored))\b",
            re.I,
        ),
    ),
    (
        "jailbreak_mode",
        0.7,
        re.compile(
            r"\b(?:do anything now|jailbreak mode|jailbroken|dan mode|you are dan|unrestricted (?:ai|assistant|mode|model)|unfiltered mode|god mode|sudo mode|without (?:any )?(?:restrictions|filters|limitations|censorship)|no (?:restrictions|limitations|rules)\b(?! apply))",
            re.I,
        ),
    ),
    ("jailbreak_terms", 0.35, re.compile(r"\b(?:DAN|developer mode|jailbreak)\b")),
    (
        "new_instructions",
        0.6,
        re.compile(
            r"(?:\b(?:new|updated|real|actual|revised) (?:instructions|rules|task|system prompt)\s*:|^\s*(?:system|assistant)\s*:|<\|?(?:im_start|system|endoftext)\|?>|\[/?(?:INST|SYS)\]|###\s*(?:system|instruction)|\bnew system prompt\b)",
            re.I | re.M,
        ),
    ),
    (
        "safety_override",
        0.7,
        re.compile(
            r"\b(?:disable|turn off|deactivate|remove|ignore|bypass|circumvent|override|switch off)\b\s+(?:your|the|all|any)\s+(?:safety\s+|content\s+|security\s+)?(?:filters?|guardrails?|restrictions|moderation|safeguards|policies|censorship)\b",
            re.I,
        ),
    ),
    (
        "exfiltration",
        0.65,
        re.compile(
            r"\b(?:send|post|upload|forward|exfiltrate|transmit|email|leak)\b[\w\s]{0,30}?\b(?:conversation|history|chat|documents?|data|keys?|credentials|passwords?|secrets?|customers?|database|files?|emails?|tokens?)\b[\w\s]{0,20}?\b(?:to|at)\s+(?:https?://|www\.|\S+@\S+)"
            r"|!\[[^\]]*\]\(https?://[^)]*\?[^)]*=",
            re.I,
        ),
    ),
    (
        "follow_hidden",
        0.65,
        re.compile(
            r"\b(?:execute|follow|obey|run|carry out)\b[\w\s]{0,25}?\b(?:hidden|embedded|secret|encoded|decoded)\s+(?:instructions?|commands?|prompts?)\b"
            r"|\b(?:decode|base64)\b[\s\S]{0,40}?\b(?:and|then)\s+(?:follow|execute|obey|run)\b",
            re.I,
        ),
    ),
    (
        "override_claim",
        0.65,
        re.compile(r"\bthis (?:message )?overrides? (?:all|any|previous|your|the)\b", re.I),
    ),
    (
        "obey_me",
        0.45,
        re.compile(
            r"\b(?:you must|you will|you have to) (?:obey|comply with) (?:me|my|these|the following)\b|\byou must obey\b",
            re.I,
        ),
    ),
]

# A rule's regex runs only when one of its words occurs (lower-cased substring test).
_INJECTION_HINTS = {
    "ignore_previous": ("ignor", "disregard", "forget", "skip", "overrid", "bypass", "drop", "abandon", "discard"),
    "reveal_system_prompt": ("prompt", "instruction", "rules", "guideline", "system message", "developer message"),
    "role_override": ("you are now", "from now on", "act as", "pretend", "roleplay"),
    "jailbreak_mode": (
        "do anything",
        "jailbr",
        "dan mode",
        "you are dan",
        "unrestricted",
        "unfiltered",
        "god mode",
        "sudo mode",
        "without",
        "no restrictions",
        "no limitations",
        "no rules",
    ),
    "jailbreak_terms": ("dan", "developer mode", "jailbreak"),
    "new_instructions": (":", "<", "[", "#", "new system prompt"),
    "safety_override": (
        "disable",
        "turn off",
        "deactivate",
        "remove",
        "ignore",
        "bypass",
        "circumvent",
        "overrid",
        "switch off",
    ),
    "exfiltration": ("http", "www.", "@", "!["),
    "follow_hidden": ("hidden", "embedded", "secret", "encoded", "decode", "base64"),
    "override_claim": ("overrid",),
    "obey_me": ("obey", "comply"),
}
_BASE64_BLOB = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def _decoded_blobs(text: str) -> list[str]:
    """Base64 blobs that decode to readable text: an encoded instruction is still an instruction."""
    import base64
    import binascii

    decoded = []
    for m in _BASE64_BLOB.finditer(text[:20000]):
        blob = m.group()
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        try:
            plain = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if sum(c.isprintable() or c.isspace() for c in plain) >= 0.95 * len(plain):
            decoded.append(plain)
    return decoded[:5]


SENSITIVITY_THRESHOLDS = {"low": 0.85, "medium": 0.6, "high": 0.4}


@dataclass(frozen=True)
class InjectionResult:
    score: float
    rules: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]


def injection_score(text: str) -> InjectionResult:
    """1 − Π(1 − weight) over the heuristic rules that fire (each rule counts once).

    The rules read the canonical form (zero-width characters, full-width forms and look-alike
    letters undone, as for every other detector); spans are of `text` where accents stripped
    nothing, else of the canonical text (an excerpt's neighbourhood either way)."""
    canon = canonical(text[:20000])
    sample = strip_accents(canon.text)
    same_length = len(sample) == len(canon.text)
    lowered = sample.lower()
    remaining, rules, spans = 1.0, [], []
    for name, weight, pattern in _INJECTION_RULES:
        hints = _INJECTION_HINTS.get(name)
        if hints and not any(h in lowered for h in hints):
            continue
        m = pattern.search(sample)
        if m:
            remaining *= 1 - weight
            rules.append(name)
            spans.append(canon.span(m.start(), m.end()) if same_length else (m.start(), m.end()))
    if "=" in sample or _BASE64_BLOB.search(sample):
        for plain in _decoded_blobs(sample):
            inner = injection_score(plain)
            if inner.rules:
                remaining *= 1 - inner.score
                rules.append("encoded:" + "+".join(inner.rules))
                spans.append((0, 0))
    return InjectionResult(round(1 - remaining, 3), tuple(rules), tuple(spans))


def is_injection(text: str, sensitivity: str) -> InjectionResult | None:
    threshold = SENSITIVITY_THRESHOLDS.get(sensitivity)
    if threshold is None:
        return None
    result = injection_score(text)
    return result if result.rules and result.score >= threshold else None
