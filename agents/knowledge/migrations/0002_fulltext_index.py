"""The full-text index of chunks, in the form each database does best.

SQLite: an FTS5 table kept in step with knowledge_chunk by triggers. Besides the
title and text it indexes `t<tenant_id>` and `k<knowledge_base_id>` tokens, so a
query filters by tenant and knowledge base inside the MATCH expression (before
any ranking or top-k cut), and the triggers mean a deleted chunk (cascades
included) can never leave an index entry behind.

PostgreSQL: a stored generated tsvector column (title weighted A, text D) with a
GIN index; rows are filtered by tenant and knowledge base in the same query that
ranks them with ts_rank_cd, and row-level security applies to the table as well.
"""

from django.db import migrations

SQLITE_FORWARD = [
    """
    CREATE VIRTUAL TABLE knowledge_chunk_fts USING fts5(
        title, text, tenant_key, kb_key, tokenize = 'porter unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER knowledge_chunk_fts_insert AFTER INSERT ON knowledge_chunk BEGIN
        INSERT INTO knowledge_chunk_fts(rowid, title, text, tenant_key, kb_key)
        VALUES (new.id, new.title, new.text, 't' || new.tenant_id, 'k' || new.knowledge_base_id);
    END
    """,
    """
    CREATE TRIGGER knowledge_chunk_fts_delete AFTER DELETE ON knowledge_chunk BEGIN
        DELETE FROM knowledge_chunk_fts WHERE rowid = old.id;
    END
    """,
    """
    CREATE TRIGGER knowledge_chunk_fts_update AFTER UPDATE OF title, text, tenant_id, knowledge_base_id
    ON knowledge_chunk BEGIN
        DELETE FROM knowledge_chunk_fts WHERE rowid = old.id;
        INSERT INTO knowledge_chunk_fts(rowid, title, text, tenant_key, kb_key)
        VALUES (new.id, new.title, new.text, 't' || new.tenant_id, 'k' || new.knowledge_base_id);
    END
    """,
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_update",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_delete",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_insert",
    "DROP TABLE IF EXISTS knowledge_chunk_fts",
]

POSTGRES_FORWARD = [
    """
    ALTER TABLE knowledge_chunk ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A') || to_tsvector('english', coalesce(text, ''))
    ) STORED
    """,
    "CREATE INDEX knowledge_chunk_search ON knowledge_chunk USING gin (search_vector)",
]
POSTGRES_BACKWARD = [
    "DROP INDEX IF EXISTS knowledge_chunk_search",
    "ALTER TABLE knowledge_chunk DROP COLUMN IF EXISTS search_vector",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
        )
    ]
