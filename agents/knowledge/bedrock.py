"""The `bedrock` backend: Amazon Bedrock Knowledge Bases.

Documents are synced to S3 under a per-tenant prefix, each with a
``<file>.metadata.json`` sidecar whose ``metadataAttributes`` carry
``tenant_id``, ``knowledge_base_id`` and ``document_id``; an ingestion job is
started with ``bedrock-agent`` ``start_ingestion_job``. Queries go through
``bedrock-agent-runtime`` ``retrieve``:

* pooled (pool and bridge tenants): the platform's knowledge base
  (``KNOWLEDGE_BEDROCK_KB_ID``), with ``vectorSearchConfiguration.filter``
  requiring ``tenant_id`` = the tenant *and* ``knowledge_base_id`` in the chosen
  bases — the filter is applied by the vector store during the search;
* silo: the tenant's own knowledge base (``knowledge_base_id`` in its resource
  bindings), filtered by the chosen bases.

Results are mapped back to the tenant's local chunks of the named document
(through the tenant-scoped manager, and only when the result's own tenant_id
attribute matches), so citations link to the same passage pages as the local
backend. The documents are chunked locally too, for the test search and the
passage pages.

AWS failing (an error answer, no connection or answer, no credentials, the tenant's role
refused by STS) is BedrockUnavailable: its text says why in the words of tenants.aws.failure
(no ARN; the log has the whole error and AWS's code) and whether to try again. The search
page shows it, the API answers it as a 503 or 502 problem, the knowledge gateway refuses with
it (the turn is answered without passages) and a document that cannot be synced keeps it as
its error.

On embedded defaults (AGENT_RUNTIME=local: tenants.models.aws_bindings_apply) none of
this is used (`serves`): a `bedrock` base is searched in the portal's own index, from
those local chunks, and nothing is sent to S3 or Bedrock — no client is made.
"""

from __future__ import annotations

import json
import logging
import re

from django.conf import settings

from agents.knowledge.models import Backend, Chunk, Document
from tenants.models import aws_bindings_apply

log = logging.getLogger(__name__)


class BedrockNotConfigured(Exception):
    pass


class BedrockUnavailable(Exception):
    """Bedrock (or S3, for a document's sync) failed for a tenant: AWS refused or throttled
    the call, could not be reached or did not answer, or the tenant's role could not be
    assumed. `text` is fit for a person (no ARN: those are in the log); `transient` whether
    trying again later may help, else the set-up must be fixed; `code` is AWS's, for the log."""

    def __init__(self, text: str, *, transient: bool, code: str):
        super().__init__(text)
        self.text = text
        self.transient = transient
        self.code = code


def unavailable(what: str, exc: Exception) -> BedrockUnavailable:
    """`exc` (BotoCoreError, ClientError) of the call that `what` names, as a BedrockUnavailable."""
    from tenants import aws

    failed = aws.failure(exc)
    return BedrockUnavailable(f"{what}: {failed.reason}. {failed.advice}", transient=failed.transient, code=failed.code)


def in_use() -> bool:
    """Whether `bedrock` bases reach Amazon Bedrock (and S3) here; not on embedded defaults."""
    return aws_bindings_apply(settings.AGENT_RUNTIME)


def serves(backend: str) -> bool:
    """Whether a base with `backend` is synced to and searched in Bedrock: a `bedrock` base
    while in_use(); otherwise its local chunks serve it, like a `local` base's."""
    return backend == Backend.BEDROCK and in_use()


def unused_binding(tenant) -> str:
    """The Bedrock knowledge base id `tenant` is bound to but this portal does not use (it
    runs on embedded defaults, so the portal's own index is used); "" otherwise."""
    return tenant.bindings.knowledge_base_id if not in_use() else ""


def make_client(service: str, region: str):
    """One seam for tests (botocore Stubber) and for deployments with custom sessions."""
    import boto3

    return boto3.client(service, region_name=region)


def client_for(service: str, tenant):
    """A client of `service` for `tenant`'s calls: signed by the tenant's role when it has one
    (tenants.aws), else by the default chain (make_client)."""
    from tenants import aws

    session = aws.session_for(tenant)
    return session.client(service) if session else make_client(service, tenant.region)


def knowledge_base_id(tenant) -> tuple[str, bool]:
    """(Bedrock knowledge base id, pooled?) for the tenant, from its bindings."""
    dedicated = tenant.bindings.knowledge_base_id
    if dedicated:
        return dedicated, False
    if not settings.KNOWLEDGE_BEDROCK_KB_ID:
        raise BedrockNotConfigured("KNOWLEDGE_BEDROCK_KB_ID is not set and the tenant has no knowledge base binding")
    return settings.KNOWLEDGE_BEDROCK_KB_ID, True


def data_source_id(tenant) -> str:
    """The data source that syncs the tenant's knowledge base: its own base's own source
    ("" when unbound: never the pooled base's source, which belongs to another base)."""
    bindings = tenant.bindings
    if bindings.knowledge_base_id:
        return bindings.knowledge_data_source_id
    return settings.KNOWLEDGE_BEDROCK_DATA_SOURCE_ID


def object_key(tenant, document: Document) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", document.filename)
    return f"tenants/{tenant.pk}/kb-{document.knowledge_base_id}/doc-{document.pk}/{safe}"


def sidecar(tenant, document: Document) -> dict:
    return {
        "metadataAttributes": {
            "tenant_id": str(tenant.pk),
            "knowledge_base_id": str(document.knowledge_base_id),
            "document_id": str(document.pk),
            "title": document.title,
        }
    }


def _start_ingestion(tenant, kb_id: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    source = data_source_id(tenant)
    if not source:
        raise BedrockNotConfigured(
            "no Bedrock data source id (KNOWLEDGE_BEDROCK_DATA_SOURCE_ID, or the knowledge_data_source_id binding of a"
            " tenant with its own knowledge base)"
        )
    try:
        client_for("bedrock-agent", tenant).start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=source)
    except (BotoCoreError, ClientError) as exc:
        raise _logged(tenant, unavailable("Amazon Bedrock did not start indexing the document", exc), exc) from exc


def _logged(tenant, failed: BedrockUnavailable, exc: Exception) -> BedrockUnavailable:
    # The whole error, ARNs included, is for the operator; the person sees failed.text.
    log.warning("bedrock sync for tenant %s failed (%s): %s", tenant.pk, failed.code, exc)
    return failed


def sync_document(tenant, document: Document, data: bytes) -> None:
    """Send the document and its sidecar to S3 and start the ingestion job. Raises
    BedrockNotConfigured (the portal's settings or the tenant's bindings lack an id) or
    BedrockUnavailable (AWS failed, or the tenant's role could not be assumed)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not settings.KNOWLEDGE_S3_BUCKET:
        raise BedrockNotConfigured("KNOWLEDGE_S3_BUCKET is not set")
    kb_id, _ = knowledge_base_id(tenant)
    key = object_key(tenant, document)
    try:
        s3 = client_for("s3", tenant)
        s3.put_object(Bucket=settings.KNOWLEDGE_S3_BUCKET, Key=key, Body=data)
        s3.put_object(
            Bucket=settings.KNOWLEDGE_S3_BUCKET,
            Key=f"{key}.metadata.json",
            Body=json.dumps(sidecar(tenant, document)).encode(),
            ContentType="application/json",
        )
    except (BotoCoreError, ClientError) as exc:
        raise _logged(tenant, unavailable("Amazon S3 did not take the document", exc), exc) from exc
    _start_ingestion(tenant, kb_id)
    Document.objects.filter(pk=document.pk).update(external_key=key)


def remove_document(tenant, document: Document) -> None:
    """Delete the document and its sidecar from S3 and start the ingestion job that drops
    them from the knowledge base. Raises BedrockUnavailable when AWS fails."""
    if not document.external_key or not settings.KNOWLEDGE_S3_BUCKET:
        return
    from botocore.exceptions import BotoCoreError, ClientError

    kb_id, _ = knowledge_base_id(tenant)
    try:
        client_for("s3", tenant).delete_objects(
            Bucket=settings.KNOWLEDGE_S3_BUCKET,
            Delete={"Objects": [{"Key": document.external_key}, {"Key": f"{document.external_key}.metadata.json"}]},
        )
    except (BotoCoreError, ClientError) as exc:
        raise _logged(tenant, unavailable("Amazon S3 did not delete the document", exc), exc) from exc
    _start_ingestion(tenant, kb_id)


def retrieval_filter(tenant, kb_ids: list[int], pooled: bool) -> dict:
    in_bases = {"in": {"key": "knowledge_base_id", "value": [str(kb) for kb in kb_ids]}}
    if not pooled:
        return in_bases
    return {"andAll": [{"equals": {"key": "tenant_id", "value": str(tenant.pk)}}, in_bases]}


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def ranking(tenant, kb_ids: list[int], query: str, limit: int) -> list[tuple[int, float]]:
    """(chunk id, score) best first, from Bedrock. Raises BedrockUnavailable when Bedrock cannot
    be asked (logged with AWS's error code) or the portal has no knowledge base to ask."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        kb_id, pooled = knowledge_base_id(tenant)
    except BedrockNotConfigured as exc:
        log.error("bedrock search for tenant %s: %s", tenant.pk, exc)
        raise BedrockUnavailable(
            "Amazon Bedrock did not search the knowledge base: the portal has no Bedrock knowledge base for it."
            " Ask your provider's operator to fix it.",
            transient=False,
            code="BedrockNotConfigured",
        ) from exc
    try:
        response = client_for("bedrock-agent-runtime", tenant).retrieve(
            knowledgeBaseId=kb_id,
            retrievalQuery={"text": query[:1000]},
            retrievalConfiguration={
                "vectorSearchConfiguration": {
                    "numberOfResults": limit,
                    "filter": retrieval_filter(tenant, kb_ids, pooled),
                }
            },
        )
    except (BotoCoreError, ClientError) as exc:
        failed = unavailable("Amazon Bedrock did not search the knowledge base", exc)
        log.warning("bedrock search for tenant %s failed (%s): %s", tenant.pk, failed.code, exc)
        raise failed from exc
    ranked: list[tuple[int, float]] = []
    for result in response.get("retrievalResults", []):
        metadata = result.get("metadata") or {}
        if str(metadata.get("tenant_id", "")) != str(tenant.pk):
            log.error("bedrock returned a passage of another tenant (%r); dropped", metadata.get("tenant_id"))
            continue
        document_id = str(metadata.get("document_id", ""))
        if not document_id.isdigit():
            continue
        words = _words((result.get("content") or {}).get("text", ""))
        # Tenant-scoped manager: a document id of another tenant finds nothing here.
        candidates = Chunk.objects.filter(document_id=int(document_id), knowledge_base_id__in=kb_ids)
        best = max(candidates, key=lambda c: len(words & _words(c.text)), default=None)
        if best is not None and all(best.pk != seen for seen, _ in ranked):
            ranked.append((best.pk, float(result.get("score") or 0.0)))
    return ranked[:limit]
