"""Every supported format becomes text; every kind of bad input is refused with a clear reason."""

from __future__ import annotations

import io
import zipfile

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from agents.knowledge import chunking
from agents.knowledge.parsing import ParseError, Section, parse
from tests.knowledge import files


def text_of(sections) -> str:
    return "\n".join(s.text for s in sections)


def test_it_reads_plain_text_in_utf8_and_in_a_legacy_encoding():
    assert "café" in text_of(parse("txt", "Le café est ouvert.".encode()))
    latin1 = ("Le café est fermé le dimanche. " * 20).encode("latin-1")
    assert "café est fermé" in text_of(parse("txt", latin1))


def test_it_splits_markdown_into_sections_by_heading():
    sections = parse("md", b"# Refunds\n\nWithin 30 days.\n\n## Shipping\n\nTwo days.\n")
    assert [(s.heading, s.text) for s in sections] == [("Refunds", "Within 30 days."), ("Shipping", "Two days.")]


def test_it_reads_html_without_scripts_or_styles():
    html = (
        b"<html><head><title>T</title><style>p{}</style></head>"
        b"<body><h2>Hours</h2><p>Open 9 to 5.</p><script>alert(1)</script></body></html>"
    )
    [section] = parse("html", html)
    assert (section.heading, section.text) == ("Hours", "Open 9 to 5.")


def test_it_reads_csv_rows_as_labelled_sentences():
    [section] = parse("csv", b"plan,price\nBasic,10\nPro,30\n")
    assert section.text == "plan: Basic; price: 10.\n\nplan: Pro; price: 30."


def test_it_reads_pdf_text_page_by_page():
    sections = parse("pdf", files.pdf("Refunds take 30 days.", "Shipping takes two days."))
    assert [(s.page, s.text) for s in sections] == [(1, "Refunds take 30 days."), (2, "Shipping takes two days.")]


def test_it_reads_docx_paragraphs_and_headings():
    data = files.docx([("Heading1", "Refunds"), ("", "Within 30 days."), ("", "To the original card.")])
    [section] = parse("docx", data)
    assert section.heading == "Refunds"
    assert section.text == "Within 30 days.\n\nTo the original card."


@pytest.mark.parametrize(
    "kind, data, reason",
    [
        ("txt", b"", "empty"),
        ("txt", b"   \n\n  ", "no text"),
        ("txt", files.pdf("hello"), "named .txt but its content is a PDF"),
        ("md", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "content is a PNG image"),
        ("pdf", b"just some text", "named .pdf but its content is not a PDF"),
        ("pdf", b"%PDF-1.4\n%%garbage that is not a pdf", "damaged"),
        ("pdf", files.encrypted_pdf("secret refund rules"), "encrypted"),
        ("docx", b"plain words", "named .docx but its content is not a Word document"),
        ("docx", b"PK\x03\x04not really a zip", "damaged"),
        ("docx", files.docx_bomb(), "decompression bomb"),
        ("txt", bytes(range(128, 256)) * 40 + b"\x81\x8d\x8f\x90\x9d" * 50, "unknown encoding"),
        ("txt", b"abc\x00def" * 10, "binary data"),
    ],
    ids=[
        "empty",
        "blank",
        "pdf-named-txt",
        "png-named-md",
        "text-named-pdf",
        "corrupt-pdf",
        "encrypted-pdf",
        "text-named-docx",
        "corrupt-docx",
        "docx-bomb",
        "unknown-encoding",
        "binary-text",
    ],
)
def test_it_refuses_bad_input_with_a_clear_reason(kind, data, reason):
    with pytest.raises(ParseError) as refused:
        parse(kind, data)
    assert reason in str(refused.value)


def test_a_zip_that_is_not_a_word_document_is_refused():
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ParseError, match="not a Word document"):
        parse("docx", out.getvalue())


def test_a_docx_declaring_entities_is_refused():
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(
            "word/document.xml",
            '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><w:document xmlns:w="x">&a;</w:document>',
        )
    with pytest.raises(ParseError, match="entities"):
        parse("docx", out.getvalue())


def test_chunks_respect_the_size_end_on_sentences_and_overlap():
    sentences = [f"Sentence number {n} is about topic {n}." for n in range(60)]
    section = Section("Heading", " ".join(sentences))
    chunks = chunking.chunk_sections([section], size=300, overlap=80)
    assert len(chunks) > 5
    assert all(len(c.text) <= 300 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)
    assert all(c.heading == "Heading" for c in chunks)
    for first, second in zip(chunks, chunks[1:], strict=False):
        # the next chunk starts with the last sentence(s) of the previous one
        assert first.text.split(". ")[-1].rstrip(".") in second.text
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)


def test_a_new_heading_starts_a_new_chunk():
    chunks = chunking.chunk_sections([Section("A", "One. Two."), Section("B", "Three.")], size=1000, overlap=100)
    assert [(c.heading, c.text) for c in chunks] == [("A", "One. Two."), ("B", "Three.")]


def test_an_overlong_sentence_is_cut_on_whitespace():
    chunks = chunking.chunk_sections([Section("", "word " * 300)], size=200, overlap=0)
    assert all(len(c.text) <= 200 for c in chunks)
    assert all(not c.text.startswith("ord") for c in chunks)


W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def shared_content_pdf(pages: int, lines: int) -> bytes:
    """A PDF whose every page draws one and the same compressed content stream."""
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    line = b"(The quick brown fox jumps over the lazy dog 0123456789) Tj 0 -14 Td "
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 72 720 Td " + line * lines + b"ET")
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Contents")] = writer._add_object(stream.flate_encode(level=9))
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    for _ in range(pages - 1):
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# Every page draws one shared compressed stream: 2 kB would yield megabytes of text and
# minutes of extraction on the shared tier queue.
def test_it_refuses_a_pdf_whose_text_is_out_of_all_proportion_to_its_size():
    data = shared_content_pdf(pages=10, lines=1000)
    assert len(data) < 2_000
    with pytest.raises(ParseError):
        parse("pdf", data)


def test_a_pdf_with_a_normal_amount_of_text_for_its_size_is_read():
    data = shared_content_pdf(pages=2, lines=20)
    assert len(parse("pdf", data)) == 2


# The byte check sees only ASCII spellings of <!ENTITY; a UTF-16 part would be expanded
# (558 bytes into 1,000,000 characters) without the parser's own refusal.
def test_it_refuses_a_docx_declaring_entities_in_utf16():
    entities = '<!ENTITY a "AAAAAAAAAA">' + "".join(
        f'<!ENTITY {name} "{("&" + inner + ";") * 10}">' for inner, name in zip("abcde", "bcdef", strict=True)
    )
    xml = (
        f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [{entities}]>'
        f'<w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>&f;</w:t></w:r></w:p></w:body></w:document>'
    )
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", xml.encode("utf-16"))
    with pytest.raises(ParseError):
        parse("docx", package.getvalue())


def test_an_overlong_word_is_cut_into_chunk_sized_pieces_in_order():
    word = "".join(chr(97 + i % 26) for i in range(1050))
    chunks = chunking.chunk_sections([Section("", f"Start {word} end.")], size=200, overlap=0)
    assert all(len(c.text) <= 200 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == f"Start{word}end."
