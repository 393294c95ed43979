"""SQLite: index tenant-prefixed terms (agents/knowledge/fts.py) instead of a tenant column.

The FTS5 table and its triggers are rebuilt and refilled from knowledge_chunk.
The triggers call knowledge_tenant_terms(), a function every Django SQLite
connection registers (KnowledgeConfig.ready). PostgreSQL is unchanged.
"""

from django.db import migrations

SQLITE_FORWARD = [
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_update",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_delete",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_insert",
    "DROP TABLE IF EXISTS knowledge_chunk_fts",
    """
    CREATE VIRTUAL TABLE knowledge_chunk_fts USING fts5(
        title, text, kb_key, tokenize = 'porter unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER knowledge_chunk_fts_insert AFTER INSERT ON knowledge_chunk BEGIN
        INSERT INTO knowledge_chunk_fts(rowid, title, text, kb_key)
        VALUES (
            new.id,
            knowledge_tenant_terms(new.tenant_id, new.title),
            knowledge_tenant_terms(new.tenant_id, new.text),
            'k' || new.knowledge_base_id
        );
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
        INSERT INTO knowledge_chunk_fts(rowid, title, text, kb_key)
        VALUES (
            new.id,
            knowledge_tenant_terms(new.tenant_id, new.title),
            knowledge_tenant_terms(new.tenant_id, new.text),
            'k' || new.knowledge_base_id
        );
    END
    """,
    """
    INSERT INTO knowledge_chunk_fts(rowid, title, text, kb_key)
    SELECT id, knowledge_tenant_terms(tenant_id, title), knowledge_tenant_terms(tenant_id, text),
           'k' || knowledge_base_id
    FROM knowledge_chunk
    """,
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    from agents.knowledge.fts import register

    register(None, schema_editor.connection)  # in case this connection predates the app's signal
    for statement in SQLITE_FORWARD:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0002_fulltext_index")]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
