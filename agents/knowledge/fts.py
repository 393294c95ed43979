"""SQLite full-text index terms that carry their tenant.

Every word of a chunk goes into the FTS5 index as ``t<tenant id>z<word>``
(``t7zrefund``), written by the index triggers through the SQL function
``knowledge_tenant_terms`` that each SQLite connection registers (see apps.py).
Queries ask for the same tenant-prefixed words. Two reasons:

* isolation *inside* the index: a query of tenant 7 can only match postings of
  tenant 7's words; another tenant's chunks are not candidates that a filter
  later removes — they are different terms;
* ranking statistics and cost per tenant: FTS5's bm25 reads the whole posting
  list of every query term to compute its inverse document frequency. With
  shared terms that is every tenant's postings (a query's cost and its scores
  would depend on other tenants' documents); with prefixed terms it is the
  tenant's own.

Words are runs of letters and digits (what FTS5's unicode61 tokenizer keeps
together), so the tokenizer sees one token per prefixed word and stems its end
(porter) as it would the bare word.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def prefix(tenant_id: int) -> str:
    return f"t{int(tenant_id)}z"


def tenant_terms(tenant_id, text) -> str:
    """The text as the index stores it: every word prefixed with its tenant."""
    if text is None or tenant_id is None:
        return ""
    p = prefix(int(tenant_id))
    return " ".join(p + word for word in _WORD.findall(str(text)))


def query_words(tenant_id: int, terms: list[str]) -> list[str]:
    p = prefix(tenant_id)
    words: list[str] = []
    for term in terms:
        for word in _WORD.findall(term):
            if p + word not in words:
                words.append(p + word)
    return words


def register(sender, connection, **kwargs) -> None:
    """connection_created: give every SQLite connection the function the triggers call."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("knowledge_tenant_terms", 2, tenant_terms, deterministic=True)
