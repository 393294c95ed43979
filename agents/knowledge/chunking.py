"""Split sections into chunks of about `size` characters on sentence and heading boundaries.

* A chunk never spans two sections (a heading starts a new chunk), so a
  passage's title says truthfully where it comes from.
* Inside a section, paragraphs and then sentences are packed greedily up to
  `size`; the next chunk starts with the last sentences of the previous one, up
  to `overlap` characters, so an answer that straddles a boundary is still found
  whole in one chunk.
* A single sentence longer than `size` is cut on whitespace (never mid-word).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.knowledge.parsing import Section

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


@dataclass(frozen=True)
class ChunkText:
    heading: str
    text: str
    page: int | None = None


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _hard_split(sentence: str, size: int) -> list[str]:
    pieces, current = [], ""
    for word in sentence.split(" "):
        if current and len(current) + 1 + len(word) > size:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
        if len(current) > size:  # one "word" longer than a chunk (a URL, base64)
            # Cut by index: re-slicing the rest each time round copied it again (quadratic
            # in the word's length: a 4 MB "word" took seconds of the shared worker).
            cut = len(current) - (len(current) % size or size)
            pieces.extend(current[i : i + size] for i in range(0, cut, size))
            current = current[cut:]
    if current:
        pieces.append(current)
    return pieces


def chunk_section(section: Section, size: int, overlap: int) -> list[ChunkText]:
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", section.text):
        for sentence in sentences(paragraph):
            units.extend(_hard_split(sentence, size) if len(sentence) > size else [sentence])
    chunks: list[ChunkText] = []
    current: list[str] = []
    length = 0
    fresh = 0  # units in `current` not yet emitted in an earlier chunk
    for unit in units:
        if current and length + 1 + len(unit) > size:
            chunks.append(ChunkText(section.heading, " ".join(current), section.page))
            carried: list[str] = []
            carried_len = 0
            for previous in reversed(current):
                if carried_len + len(previous) + 1 > overlap or len(carried) + 1 >= len(current):
                    break
                carried.insert(0, previous)
                carried_len += len(previous) + 1
            current, length, fresh = carried, carried_len, 0
        current.append(unit)
        length += len(unit) + 1
        fresh += 1
    if current and fresh:
        chunks.append(ChunkText(section.heading, " ".join(current), section.page))
    return chunks


def chunk_sections(sections: list[Section], size: int, overlap: int) -> list[ChunkText]:
    size = max(size, 100)
    overlap = max(0, min(overlap, size // 2))
    chunks: list[ChunkText] = []
    for section in sections:
        chunks.extend(chunk_section(section, size, overlap))
    return chunks
