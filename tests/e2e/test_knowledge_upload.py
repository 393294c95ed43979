"""A tenant admin uploads a document on a knowledge base page: it is listed at once and
its status moves on to Ready without a reload, and so do the page's document and passage
counts and the upload's own line (which said "it is being indexed" for ever)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from agents.knowledge import services
from agents.knowledge.models import Chunk, Document
from tenants.context import tenant_context
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_billing_dashboard import sign_in
from tests.knowledge.helpers import entitle, make_kb

pytestmark = pytest.mark.browser


def test_an_uploaded_document_is_listed_at_once_and_the_page_follows_its_ingestion(
    world, live_server, launch_browser, settings, tmp_path
):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # as under `make run`: a worker ingests it later
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    entitle(world.a.tenant)
    kb = make_kb(world.a, chunk_size=400, chunk_overlap=40)
    policy = tmp_path / "refund-policy.txt"
    policy.write_text("Refunds are accepted within 30 days of purchase, with the receipt.\n" * 30)

    page = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1366, "height": 900}).new_page()
    sign_in(page, world.a.admin.email)
    page.goto(f"/t/alpha/knowledge/{kb.pk}/")
    expect(page.locator(".page-header .page-sub")).to_contain_text("0 documents · 0 passages")
    page.set_input_files("#kb-files", str(policy))

    row = page.locator("#kb-documents tr", has_text="refund-policy")
    upload = page.locator("#kb-uploads li", has_text="refund-policy.txt")
    expect(row).to_contain_text("Queued")
    expect(page.locator(".page-header .page-sub")).to_contain_text("1 document · 0 passages")
    expect(upload).to_contain_text("Queued for indexing")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "e2e-knowledge-upload-queued.png"), full_page=True)

    with tenant_context(world.a.tenant):  # the worker's part
        document = Document.objects.get()
        services.ingest_document(world.a.tenant, document.pk, document.version)
        passages = Chunk.objects.count()
    assert passages > 1
    expect(row).to_contain_text("Ready", timeout=10_000)
    expect(upload).to_contain_text(f"Ready: {passages} passages")
    expect(page.locator(".page-header .page-sub")).to_contain_text(f"1 document · {passages} passages")
    page.screenshot(path=str(SCREENSHOTS / "e2e-knowledge-upload-ready.png"), full_page=True)
