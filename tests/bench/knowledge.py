"""Knowledge-base benchmark: retrieval quality, query latency at scale, ingestion throughput.

    .venv/bin/python -m tests.bench.knowledge [--quick]

Writes var/bench/knowledge.json and prints a table. Each database (SQLite, and
PostgreSQL when BENCH_PG_OWNER_URL reaches a server) is measured in a child
process with a database of its own (a SQLite file under var/bench/knowledge-*/,
or a PostgreSQL database created as the owner role and dropped afterwards; the
child connects as the application role, so row-level security is in force).

What is measured
----------------
* **Quality** (`recall_at_5`, `mrr`): the corpus is the Python reference topics
  that ship with CPython (`pydoc_data.topics`, offline), one document per topic,
  chunked with the default settings (1200 characters, 150 overlap) into well
  over 300 chunks. Questions whose answering passage is known:
  - *handwritten*: natural questions about a topic (the answer is any passage
    of that topic's document);
  - *sampled*: a sentence drawn at random (seeded) from a random chunk, turned
    into a question by keeping a random 60 % of its words, in order, after
    "What does the reference say about". Words are dropped at random, not by
    their rarity, so the query is not shaped to suit the ranking function; a
    hit is any returned passage that contains the whole sentence.
* **Speed** (`query_ms_p50`, `query_ms_p99`): 100,000 chunks spread over 100
  tenants (one base each, texts drawn from the same corpus so the vocabulary is
  real), then the questions above asked as one tenant through
  `retrieval.search(k=5)`, the code path of the gateway (ranking and loading the
  chunks).
* **Ingestion** (`ingest_chunks_per_s`): a 50 MB batch of text documents through
  the ingestion function the Celery task runs (read the stored file → parse →
  chunk → index in one transaction per document).

`--quick` shrinks the speed and ingestion sizes (10,000 chunks over 10 tenants,
a 5 MB batch) for a smoke run; quality always uses the whole corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

from tests.bench.common import (
    VAR_BENCH,
    create_database,
    django_env,
    drop_database,
    log,
    percentile,
    postgres_unreachable,
    setup_django,
)

RESULT = VAR_BENCH / "knowledge.json"
CHILD_TIMEOUT = 600
SEED = 20261128

HANDWRITTEN = [
    ("How does the with statement call __enter__ and __exit__?", "with"),
    ("What happens when a for loop's iterable is exhausted and there is an else clause?", "for"),
    ("How do I raise an exception from another exception to chain them?", "raise"),
    ("What does the global statement declare about identifiers?", "global"),
    ("How is a try statement's finally clause executed when an exception occurs?", "try"),
    ("What are the rules for the import statement and how are modules found?", "import"),
    ("How does the assert statement behave when optimisation is requested?", "assert"),
    ("What does the nonlocal statement do in nested functions?", "nonlocal"),
    ("How does a lambda expression create an anonymous function?", "lambda"),
    ("What does the yield expression do inside a generator function?", "yieldexpr"),
    ("How are class definitions executed and what is the class namespace?", "class"),
    ("How does the del statement delete names and items?", "del"),
    ("What does the pass statement do?", "pass"),
    ("How are augmented assignment statements like += evaluated?", "augassign"),
    ("How are Boolean operations and, or and not evaluated?", "booleans"),
    ("What does the match statement do with case patterns?", "match"),
    ("How are string literals prefixed with r or b interpreted?", "strings"),
    ("How are comparisons chained, like a < b < c?", "comparisons"),
    ("What does the continue statement do in a loop?", "continue"),
    ("How does the while statement repeat execution?", "while"),
]


# --- corpus and questions ---------------------------------------------------------------------------


def corpus() -> dict[str, str]:
    from pydoc_data.topics import topics

    return dict(sorted(topics.items()))


def as_markdown(key: str, text: str) -> str:
    return f"# {key}\n\n{text}"


def sampled_questions(chunks: list[tuple[int, str, str]], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(question, sentence that answers it) drawn from random chunks."""
    from agents.knowledge.chunking import sentences

    questions: list[tuple[str, str]] = []
    order = list(range(len(chunks)))
    rng.shuffle(order)
    for index in order:
        candidates = [s for s in sentences(chunks[index][2]) if 10 <= len(s.split()) <= 40 and s.isascii()]
        if not candidates:
            continue
        sentence = rng.choice(candidates)
        words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sentence)
        kept = [w for w in words if rng.random() < 0.6]
        if len(kept) < 4:
            continue
        questions.append((f"What does the reference say about {' '.join(kept)}?", sentence))
        if len(questions) == count:
            break
    return questions


# --- measurements (in the child, with Django set up) ---------------------------------------------------


def _tenant(slug: str, tier):
    from tenants.models import Tenant

    return Tenant.objects.create(slug=slug, name=slug.title(), tier=tier, feature_grants=["knowledge_bases"])


def _tier():
    from tenants.models import Tier

    return Tier.objects.create(
        slug=f"bench-{os.getpid()}-{time.monotonic_ns()}",
        name="Bench",
        default_features=["chat", "knowledge_bases"],
        celery_queue="tier-bench",
    )


def _document(kb, title: str, filename: str, data: bytes):
    from django.core.files.base import ContentFile

    from agents.knowledge.models import Document

    document = Document(knowledge_base=kb, title=title, filename=filename, kind=filename.rsplit(".", 1)[1])
    document.size, document.checksum = len(data), f"{time.monotonic_ns():064d}"
    document.file.save(filename, ContentFile(data), save=False)
    document.save()
    return document


def measure_quality(tier) -> dict:
    from agents.knowledge import retrieval, services
    from agents.knowledge.models import Chunk, KnowledgeBase
    from tenants.context import tenant_context

    rng = random.Random(SEED)
    tenant = _tenant("eval", tier)
    with tenant_context(tenant):
        kb = KnowledgeBase.objects.create(name="Python reference")
        for key, text in corpus().items():
            document = _document(kb, key, f"{key}.md", as_markdown(key, text).encode())
            services.ingest_document(tenant, document.pk, document.version)
        chunks = list(Chunk.objects.values_list("id", "document__title", "text").order_by("id"))
        questions = [(q, ("topic", topic)) for q, topic in HANDWRITTEN]
        questions += [(q, ("sentence", s)) for q, s in sampled_questions(chunks, 60, rng)]
        ranks = {"handwritten": [], "sampled": []}
        for question, (kind, answer) in questions:
            hits = retrieval.search(question, [kb], k=5)
            rank = None
            for position, hit in enumerate(hits, start=1):
                if (kind == "topic" and hit.chunk.document.title == answer) or (
                    kind == "sentence" and answer in hit.chunk.text
                ):
                    rank = position
                    break
            ranks["handwritten" if kind == "topic" else "sampled"].append(rank)
    every = ranks["handwritten"] + ranks["sampled"]

    def recall(values):
        return round(sum(1 for r in values if r is not None) / len(values), 4)

    def mrr(values):
        return round(sum(1 / r for r in values if r is not None) / len(values), 4)

    return {
        "chunks": len(chunks),
        "documents": len(corpus()),
        "questions": len(every),
        "recall_at_5": recall(every),
        "mrr": mrr(every),
        "handwritten": {"questions": len(ranks["handwritten"]), "recall_at_5": recall(ranks["handwritten"])},
        "sampled": {"questions": len(ranks["sampled"]), "recall_at_5": recall(ranks["sampled"])},
        "_questions": [q for q, _ in questions],
    }


def measure_speed(tier, tenants: int, per_tenant: int, questions: list[str]) -> dict:
    from django.db import connection, transaction

    from agents.knowledge import retrieval
    from agents.knowledge.chunking import chunk_sections
    from agents.knowledge.models import Chunk, Document, KnowledgeBase
    from agents.knowledge.parsing import Section
    from tenants.context import tenant_context

    rng = random.Random(SEED + 1)
    pieces = []
    for key, text in corpus().items():
        pieces.extend((key, c.text) for c in chunk_sections([Section(key, text)], 1200, 150))
    started = time.perf_counter()
    target = None
    for n in range(tenants):
        tenant = _tenant(f"speed-{n:03d}", tier)
        with tenant_context(tenant), transaction.atomic():
            kb = KnowledgeBase.objects.create(name="Handbook")
            document = Document.objects.create(
                knowledge_base=kb, title="Handbook", filename="handbook.md", kind="md", checksum="0" * 64
            )
            rows = []
            for position in range(per_tenant):
                key, text = pieces[rng.randrange(len(pieces))]
                rows.append(
                    Chunk(
                        tenant=tenant,
                        knowledge_base=kb,
                        document=document,
                        position=position,
                        title=f"Handbook › {key}",
                        text=text,
                    )
                )
            Chunk.objects.bulk_create(rows, batch_size=1000)
        if n == tenants // 2:
            target = (tenant, kb)
    load_seconds = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE knowledge_chunk")
    tenant, kb = target
    timings = []
    with tenant_context(tenant):
        for question in questions[:10]:  # warm the caches once
            retrieval.search(question, [kb], k=5)
        for _ in range(2):
            for question in questions:
                t0 = time.perf_counter()
                hits = retrieval.search(question, [kb], k=5)
                timings.append(time.perf_counter() - t0)
                assert all(h.chunk.tenant_id == tenant.pk for h in hits)
    ms = [t * 1000 for t in timings]
    return {
        "chunks": tenants * per_tenant,
        "tenants": tenants,
        "queries": len(ms),
        "load_seconds": round(load_seconds, 1),
        "query_ms_p50": round(percentile(ms, 50), 3),
        "query_ms_p99": round(percentile(ms, 99), 3),
    }


def measure_ingest(tier, megabytes: int) -> dict:
    from agents.knowledge import services
    from agents.knowledge.models import Chunk, KnowledgeBase
    from tenants.context import tenant_context

    texts = list(corpus().items())
    tenant = _tenant("ingest", tier)
    target = megabytes * 1024 * 1024
    with tenant_context(tenant):
        kb = KnowledgeBase.objects.create(name="Batch")
        documents, total, n = [], 0, 0
        while total < target:
            # ~512 KB documents made of the reference topics, rotated so no two are the same.
            parts, size = [], 0
            while size < 512 * 1024:
                key, text = texts[n % len(texts)]
                parts.append(as_markdown(f"{key} ({n})", text))
                size += len(text) + 20
                n += 1
            data = "\n\n".join(parts).encode()
            documents.append(_document(kb, f"batch {len(documents)}", f"batch-{len(documents):03d}.md", data))
            total += len(data)
        started = time.perf_counter()
        for document in documents:
            assert services.ingest_document(tenant, document.pk, document.version) == "ready"
        seconds = time.perf_counter() - started
        chunks = Chunk.objects.count()
    return {
        "megabytes": round(total / 1024 / 1024, 1),
        "documents": len(documents),
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "ingest_chunks_per_s": round(chunks / seconds, 1),
        "ingest_mb_per_s": round(total / 1024 / 1024 / seconds, 2),
    }


def child(out: str, quick: bool) -> None:
    setup_django()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    from django.db import connection

    tier = _tier()
    log(f"{connection.vendor}: quality")
    quality = measure_quality(tier)
    questions = quality.pop("_questions")
    tenants, per_tenant = (10, 1000) if quick else (100, 1000)
    log(f"{connection.vendor}: speed over {tenants * per_tenant:,} chunks in {tenants} tenants")
    speed = measure_speed(tier, tenants, per_tenant, questions)
    megabytes = 5 if quick else 50
    log(f"{connection.vendor}: ingesting a {megabytes} MB batch")
    ingest = measure_ingest(tier, megabytes)
    with open(out, "w") as handle:
        json.dump({"database": connection.vendor, "quality": quality, "speed": speed, "ingest": ingest}, handle)


# --- orchestration -----------------------------------------------------------------------------------


def run_child(name: str, postgres: bool, quick: bool) -> dict:
    var_dir = VAR_BENCH / f"knowledge-{name}"
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)
    database = f"portal_bench_knowledge_{os.getpid()}" if postgres else None
    out = var_dir / "result.json"
    if database:
        log(f"{name}: creating PostgreSQL database {database}")
        create_database(database)
    env = django_env(database, redis=False, var_dir=var_dir, CELERY_TASK_ALWAYS_EAGER="0")
    argv = [sys.executable, "-m", "tests.bench.knowledge", "--child", str(out)] + (["--quick"] if quick else [])
    try:
        subprocess.run(argv, env=env, check=True, timeout=CHILD_TIMEOUT)  # noqa: S603
        return json.loads(out.read_text())
    finally:
        if database:
            drop_database(database)
        shutil.rmtree(var_dir / "knowledge", ignore_errors=True)


def table(results: dict) -> str:
    rows = [
        ("recall_at_5", lambda r: r["quality"]["recall_at_5"], "≥ 0.9"),
        ("mrr", lambda r: r["quality"]["mrr"], ""),
        ("eval chunks / questions", lambda r: f"{r['quality']['chunks']} / {r['quality']['questions']}", "≥ 300 / 50"),
        ("query_ms_p50", lambda r: r["speed"]["query_ms_p50"], "≤ 20"),
        ("query_ms_p99", lambda r: r["speed"]["query_ms_p99"], ""),
        ("chunks / tenants (speed)", lambda r: f"{r['speed']['chunks']:,} / {r['speed']['tenants']}", ""),
        ("ingest_chunks_per_s", lambda r: r["ingest"]["ingest_chunks_per_s"], ""),
        ("ingest batch MB", lambda r: r["ingest"]["megabytes"], ""),
    ]
    names = list(results)
    lines = [f"{'metric':28} " + " ".join(f"{n:>14}" for n in names) + f" {'goal':>12}"]
    for label, get, goal in rows:
        cells = []
        for name in names:
            result = results[name]
            cells.append(f"{get(result)!s:>14}" if "error" not in result else f"{'skipped':>14}")
        lines.append(f"{label:28} " + " ".join(cells) + f" {goal:>12}")
    for name, result in results.items():
        if "error" in result:
            lines.append(f"  {name}: {result['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.knowledge", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="10,000 chunks and a 5 MB batch instead of 100,000 / 50 MB"
    )
    parser.add_argument("--child", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.quick)
        return 0
    results: dict[str, dict] = {}
    started = time.perf_counter()
    try:
        results["sqlite"] = run_child("sqlite", False, args.quick)
    except Exception as exc:
        results["sqlite"] = {"error": str(exc)}
    reason = postgres_unreachable()
    if reason:
        results["postgresql"] = {"error": f"skipped: {reason}"}
    else:
        try:
            results["postgresql"] = run_child("postgresql", True, args.quick)
        except Exception as exc:
            results["postgresql"] = {"error": str(exc)}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "goals": {"recall_at_5": 0.9, "query_ms_p50": 20},
        "results": results,
    }
    RESULT.write_text(json.dumps(document, indent=2))
    print()
    print(table(results))
    print(f"\nwritten to {RESULT}")
    return 0 if all("error" not in r for r in results.values() if not r.get("error", "").startswith("skipped")) else 1


if __name__ == "__main__":
    sys.exit(main())
