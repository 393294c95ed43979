"""Demo knowledge: a few real documents per demo tenant that has the feature (idempotent).

Globex and Initech get near-identical handbooks that differ in the facts that
matter (refund windows, support hours, prices), so the demo shows at a glance that
each tenant's agent cites its own documents only. Documents are ingested
in-process (no worker needed while seeding), through the same parse → chunk →
index code the Celery task runs.
"""

from __future__ import annotations

import hashlib

from django.core.files.base import ContentFile
from django.db import transaction

from agents.guardrails.services import canary_for
from agents.knowledge import services
from agents.knowledge.models import Document, DocumentStatus, KnowledgeBase
from tenants import audit
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.roles import Role

POLICY = """# Returns and refunds

{name} customers may return any product within {days} days of delivery for a full refund.
Refunds are paid to the original payment method within five working days of the return arriving at our warehouse.
Opened software licences cannot be refunded once the licence key has been activated.

## Damaged or faulty goods

If an item arrives damaged, report it within 48 hours with a photo of the packaging.
We send a replacement at no cost, or refund the item if no replacement is in stock.

# Support

The {name} support desk is open {hours}.
Urgent incidents for production systems can be reported by phone at any time;
the on-call engineer answers within {response}.

# Shipping

Standard parcels leave the warehouse within two working days. Express delivery arrives the next working day
when ordered before 14:00 local time. Orders above {free_shipping} ship free of charge.
"""

ONBOARDING = """<html><head><title>IT onboarding</title></head><body>
<h1>Your first week at {name}</h1>
<p>Your laptop is prepared by the IT team and handed over on your first morning. Sign in with the temporary
password from your welcome letter and change it at once; passwords must be at least 14 characters long.</p>
<h2>Two-factor authentication</h2>
<p>Every {name} account must use an authenticator app. Set it up on the first day: the portal asks for it at the
next sign-in, and accounts without it are locked after {mfa_days} days.</p>
<h2>Expenses</h2>
<p>Travel and equipment expenses up to {expense_limit} are approved by your manager; anything above needs the
finance team. Submit receipts within 30 days.</p>
<p>Document control: {canary}</p>
</body></html>
"""

PRICES = """plan,monthly price,included seats,support
Starter,{starter},5,Email during office hours
Business,{business},25,Email and phone
Enterprise,on request,unlimited,Dedicated account manager and 24/7 phone
"""

TENANT_FACTS = {
    "globex": {
        "name": "Globex",
        "days": 30,
        "hours": "Monday to Friday, 8:00 to 18:00 CET",
        "response": "30 minutes",
        "free_shipping": "EUR 50",
        "mfa_days": 7,
        "expense_limit": "EUR 500",
        "starter": "EUR 19",
        "business": "EUR 79",
    },
    "initech": {
        "name": "Initech",
        "days": 60,
        "hours": "every day, 7:00 to 22:00 Pacific time",
        "response": "15 minutes",
        "free_shipping": "USD 100",
        "mfa_days": 3,
        "expense_limit": "USD 1,000",
        "starter": "USD 25",
        "business": "USD 99",
    },
}

DOCUMENTS = (
    ("Customer handbook", "customer-handbook.md", "Returns, support and shipping", POLICY),
    ("Employee handbook", "it-onboarding.html", "IT onboarding", ONBOARDING),
    ("Customer handbook", "price-list.csv", "Price list", PRICES),
)


def _document(kb: KnowledgeBase, filename: str, title: str, data: bytes, actor=None) -> bool:
    checksum = hashlib.sha256(data).hexdigest()
    if Document.objects.filter(knowledge_base=kb, checksum=checksum, status=DocumentStatus.READY).exists():
        return False
    with transaction.atomic():
        document = Document.objects.filter(knowledge_base=kb, filename=filename).first() or Document(
            knowledge_base=kb, filename=filename, title=title
        )
        if document.pk:
            document.version += 1
        document.kind = filename.rsplit(".", 1)[1]
        document.size, document.checksum = len(data), checksum
        document.status, document.error = DocumentStatus.UPLOADED, ""
        document.file.save(filename, ContentFile(data), save=False)
        document.save()
        audit.record(
            "knowledge.document_uploaded" if document.version == 1 else "knowledge.document_replaced",
            actor=actor,
            tenant=kb.tenant,
            target=document,
            after={"knowledge_base": kb.name, "filename": filename, "version": document.version, "size": len(data)},
        )
    services.ingest_document(kb.tenant, document.pk, document.version)
    return True


def seed_knowledge() -> int:
    created = 0
    for slug, facts in TENANT_FACTS.items():
        tenant = Tenant.objects.select_related("tier").filter(slug=slug).first()
        if tenant is None or not services.entitled(tenant):
            continue
        # A canary planted in the tenant's own documents: the output guardrails block any other
        # tenant's answer that contains it (cross-tenant leakage), while this tenant's may.
        facts = {**facts, "canary": canary_for(tenant)}
        with tenant_context(tenant):
            admin = audit.seeded_by(Role.ADMIN)
            for kb_name, filename, title, template in DOCUMENTS:
                kb, new = KnowledgeBase.objects.get_or_create(
                    name=kb_name, defaults={"description": f"{facts['name']} {kb_name.lower()} for the demo"}
                )
                created += new
                if new:
                    audit.record(
                        "knowledge.base_created",
                        actor=admin,
                        tenant=tenant,
                        target=kb,
                        after={"name": kb.name, "backend": kb.backend},
                    )
                created += _document(kb, filename, title, template.format(**facts).encode(), admin)
    return created
