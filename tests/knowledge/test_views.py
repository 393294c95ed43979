"""The knowledge screens: create, upload several files with live status, test search, passages."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.knowledge.models import AgentKnowledge, Document, KnowledgeBase
from tenants.context import tenant_context
from tests.agents.helpers import make_catalogue
from tests.knowledge.helpers import entitle, ingest, make_kb

XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", "HTTP_ACCEPT": "application/json"}
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def admin(client, world):
    entitle(world.a.tenant, world.b.tenant)
    client.force_login(world.a.admin)
    return client


def test_it_creates_a_knowledge_base_and_shows_it(admin, world):
    response = admin.post(
        "/t/alpha/knowledge/new/", {"name": "Handbook", "backend": "local", "chunk_size": "800", "chunk_overlap": "80"}
    )
    with tenant_context(world.a.tenant):
        kb = KnowledgeBase.objects.get()
    assert response["Location"] == f"/t/alpha/knowledge/{kb.pk}/"
    assert (kb.name, kb.chunk_size, kb.chunk_overlap) == ("Handbook", 800, 80)
    page = admin.get("/t/alpha/knowledge/").content.decode()
    assert "Handbook" in page and 'id="kb-table"' in page


def test_it_explains_a_bad_form_instead_of_failing(admin, world):
    response = admin.post("/t/alpha/knowledge/new/", {"name": "", "chunk_size": "abc", "chunk_overlap": "-1"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Give the knowledge base a name." in page
    assert "Between 200 and 8000 characters." in page  # "abc" is not quietly the default size
    assert "Between 0 and half the passage size." in page  # no half of a refused size named


def test_an_overlap_is_not_refused_against_a_passage_size_that_is_refused_itself(admin, world):
    response = admin.post(
        "/t/alpha/knowledge/new/", {"name": "Handbook", "backend": "local", "chunk_size": "5", "chunk_overlap": "150"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="kb-chunk-size-errors"' in page
    assert 'id="kb-chunk-overlap-errors"' not in page  # 150 is fine for a size that is right


def test_a_refused_new_knowledge_base_keeps_what_was_typed(admin, world):
    typed = {"name": "Handbook", "description": "Policies & <rules>", "backend": "local", "chunk_size": "900"}
    response = admin.post("/t/alpha/knowledge/new/", {**typed, "chunk_overlap": "800"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Between 0 and half the passage size (450 characters)." in page  # the form's own word
    assert 'name="name" maxlength="100" required placeholder="e.g. Support handbook" value="Handbook"' in page
    assert 'value="Policies &amp; &lt;rules&gt;"' in page
    assert 'name="chunk_size" type="number" min="200" max="8000" value="900"' in page
    assert 'name="chunk_overlap" type="number" min="0" max="4000" value="800"' in page
    with tenant_context(world.a.tenant):
        assert not KnowledgeBase.objects.exists()


def test_it_refuses_a_description_over_its_limit_instead_of_cutting_it(admin, world):
    response = admin.post("/t/alpha/knowledge/new/", {"name": "Handbook", "backend": "local", "description": "d" * 501})
    assert response.status_code == 400
    assert "At most 500 characters." in response.content.decode()
    with tenant_context(world.a.tenant):
        assert not KnowledgeBase.objects.exists()
    exact = admin.post("/t/alpha/knowledge/new/", {"name": "Handbook", "backend": "local", "description": "d" * 500})
    assert exact.status_code == 302
    with tenant_context(world.a.tenant):
        assert KnowledgeBase.objects.get().description == "d" * 500


def test_a_taken_name_and_another_bad_field_are_both_shown_beside_their_fields(admin, world):
    make_kb(world.a, name="Handbook")
    created = admin.post(
        "/t/alpha/knowledge/new/", {"name": "handbook", "backend": "local", "description": "d" * 501}
    ).content.decode()
    assert 'id="kb-name-errors"><li>A knowledge base with this name exists already.</li>' in created
    assert 'id="kb-description-errors"><li>At most 500 characters.</li>' in created

    kb = make_kb(world.a, name="Runbook")
    edited = admin.post(f"/t/alpha/knowledge/{kb.pk}/edit/", {"name": "Handbook", "description": "d" * 501})
    page = edited.content.decode()
    assert edited.status_code == 400
    assert 'id="kb-name-errors"><li>A knowledge base with this name exists already.</li>' in page
    assert 'id="kb-description-errors"><li>At most 500 characters.</li>' in page


def test_every_reason_a_field_is_refused_is_shown_beside_it(admin, world):
    response = admin.post("/t/alpha/knowledge/new/", {"name": "n\x00" * 60, "backend": "local"})
    assert response.status_code == 400
    assert (
        'id="kb-name-errors"><li>At most 100 characters.</li><li>Null characters are not allowed.</li></ul>'
        in response.content.decode()
    )


def test_a_field_with_an_error_is_marked_like_every_other(admin, world):
    page = admin.post(
        "/t/alpha/knowledge/new/", {"name": "Handbook", "backend": "nope", "chunk_size": "5", "chunk_overlap": "-1"}
    ).content.decode()
    for field in ("backend", "chunk-size", "chunk-overlap"):
        assert f'<div class="field has-error"><label class="label" for="kb-{field}">' in page


def test_a_refused_edit_keeps_what_was_typed_and_says_why(admin, world):
    kb = make_kb(world.a, description="Policies")
    typed = {"name": "Handbook & <rules>", "description": "d" * 501}
    response = admin.post(f"/t/alpha/knowledge/{kb.pk}/edit/", typed)
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="kb-description-errors"><li>At most 500 characters.</li>' in page
    assert 'name="name" maxlength="100" value="Handbook &amp; &lt;rules&gt;"' in page
    assert f'name="description" maxlength="500" value="{"d" * 501}"' in page
    with tenant_context(world.a.tenant):
        assert list(KnowledgeBase.objects.values_list("name", "description")) == [("Handbook", "Policies")]


def test_renaming_to_another_bases_name_is_refused_beside_the_name(admin, world):
    make_kb(world.a, name="Handbook")
    kb = make_kb(world.a, name="Runbook")
    response = admin.post(f"/t/alpha/knowledge/{kb.pk}/edit/", {"name": "handbook", "description": "Ops"})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="kb-name-errors"><li>A knowledge base with this name exists already.</li>' in page
    assert 'value="handbook"' in page and 'value="Ops"' in page
    assert "<h1" in page and ">Runbook<" in page  # the heading is still the saved name
    saved = admin.post(f"/t/alpha/knowledge/{kb.pk}/edit/", {"name": "Ops runbook", "description": "Ops"})
    assert saved["Location"] == f"/t/alpha/knowledge/{kb.pk}/"


def test_a_rename_that_loses_a_race_for_the_name_is_refused_not_a_500(admin, world, monkeypatch):
    # Two admins renaming two bases to one name at the same moment: both pass the name check,
    # and the database's unique constraint refuses the second (an IntegrityError, once a 500).
    from agents.knowledge import services

    make_kb(world.a, name="Handbook")
    kb = make_kb(world.a, name="Runbook")
    monkeypatch.setattr(services, "_name_taken", lambda name, exclude=None: False)
    response = admin.post(f"/t/alpha/knowledge/{kb.pk}/edit/", {"name": "Handbook", "description": "Ops"})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="kb-name-errors"><li>A knowledge base with this name exists already.</li>' in page
    assert ">Runbook<" in page  # the heading is still the saved name, not the refused one
    with tenant_context(world.a.tenant):
        assert sorted(KnowledgeBase.objects.values_list("name", flat=True)) == ["Handbook", "Runbook"]


@pytest.mark.parametrize("field", ["name", "description"])
def test_it_refuses_a_null_character_in_a_new_or_renamed_knowledge_base(admin, world, field):
    # PostgreSQL cannot store NUL: this was a 500 there (found by the every-route garbage sweep).
    kb = make_kb(world.a)
    good = {"name": "Handbook", "description": "Policies", "backend": "local"}
    created = admin.post("/t/alpha/knowledge/new/", {**good, field: "Hand\x00book"})
    edited = admin.post(f"/t/alpha/knowledge/{kb.pk}/edit/", {**good, field: "Hand\x00book"})
    assert (created.status_code, edited.status_code) == (400, 400)
    assert "Null characters are not allowed." in created.content.decode()
    assert "Null characters are not allowed." in edited.content.decode()
    with tenant_context(world.a.tenant):
        assert list(KnowledgeBase.objects.values_list("name", "description")) == [(kb.name, kb.description)]


def test_it_uploads_several_files_each_with_its_own_answer_and_indexes_them(
    admin, world, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    kb = make_kb(world.a)
    url = f"/t/alpha/knowledge/{kb.pk}/upload/"
    with django_capture_on_commit_callbacks(execute=True):
        ok = admin.post(url, {"files": SimpleUploadedFile("a.md", b"# Refunds\n\nWithin 30 days.")}, **XHR)
        also = admin.post(url, {"files": SimpleUploadedFile("b.txt", b"Shipping takes two days.")}, **XHR)
        bad = admin.post(url, {"files": SimpleUploadedFile("c.exe", b"MZ")}, **XHR)
    assert ok.status_code == also.status_code == 200
    assert ok.json()["results"][0]["outcome"] == "created"
    assert bad.status_code == 400
    assert "only .txt" in bad.json()["results"][0]["message"]
    with tenant_context(world.a.tenant):
        assert sorted(Document.objects.values_list("filename", "status")) == [("a.md", "ready"), ("b.txt", "ready")]
    fragment = admin.get(f"/t/alpha/knowledge/{kb.pk}/documents/", **HX).content.decode()
    assert fragment.count('data-status="ready"') == 2
    assert "hx-trigger" not in fragment  # nothing left to wait for: the polling stops


def test_without_javascript_one_form_uploads_all_files(admin, world):
    kb = make_kb(world.a)
    files = [SimpleUploadedFile("a.txt", b"One."), SimpleUploadedFile("b.txt", b"Two.")]
    response = admin.post(f"/t/alpha/knowledge/{kb.pk}/upload/", {"files": files}, follow=True)
    assert "a.txt: Uploaded; it is being indexed." in response.content.decode()
    with tenant_context(world.a.tenant):
        assert Document.objects.count() == 2


def test_the_documents_table_polls_while_a_document_is_being_indexed(admin, world):
    kb = make_kb(world.a)
    admin.post(f"/t/alpha/knowledge/{kb.pk}/upload/", {"files": SimpleUploadedFile("a.txt", b"One.")}, **XHR)
    fragment = admin.get(f"/t/alpha/knowledge/{kb.pk}/documents/", **HX).content.decode()
    assert 'hx-trigger="every 2s"' in fragment
    assert 'data-status="uploaded"' in fragment


def test_the_refreshed_documents_table_brings_the_pages_counts_along(
    admin, world, settings, django_capture_on_commit_callbacks
):
    # The page's "N documents · N passages" line was rendered once and stayed as it was
    # while uploads were listed and indexed beneath it.
    settings.CELERY_TASK_ALWAYS_EAGER = True
    kb = make_kb(world.a, chunk_size=200, chunk_overlap=20)
    page = admin.get(f"/t/alpha/knowledge/{kb.pk}/").content.decode()
    assert '<span class="muted small" id="kb-summary">0 documents · 0 passages' in page
    assert "hx-swap-oob" not in page
    text = ("Refunds are accepted within 30 days of purchase. " * 12).encode()
    with django_capture_on_commit_callbacks(execute=True):
        uploaded = admin.post(
            f"/t/alpha/knowledge/{kb.pk}/upload/", {"files": SimpleUploadedFile("a.txt", text)}, **XHR
        )
    with tenant_context(world.a.tenant):
        document = Document.objects.get()
    # The upload's answer names its document, whose row the page then follows.
    assert uploaded.json()["results"][0]["document"] == document.pk
    fragment = admin.get(f"/t/alpha/knowledge/{kb.pk}/documents/", **HX).content.decode()
    assert document.chunk_count > 1
    assert (
        f'<span class="muted small" id="kb-summary" hx-swap-oob="true">1 document · {document.chunk_count} passages'
        in fragment
    )
    assert f'data-document-id="{document.pk}" data-status="ready" data-chunk-count="{document.chunk_count}"' in fragment
    assert 'hx-sync="this:replace"' in fragment


def test_a_failed_document_shows_its_reason(admin, world):
    kb = make_kb(world.a)
    ingest(world.a, kb, "scan.pdf", b"%PDF-1.4 broken")
    page = admin.get(f"/t/alpha/knowledge/{kb.pk}/").content.decode()
    assert "The PDF is damaged and could not be read." in page
    assert "Retry" in page


def test_the_test_search_ranks_passages_with_scores_from_this_tenant_only(admin, world):
    kb = make_kb(world.a)
    ingest(world.a, kb, "policy.md", "# Refunds\n\nWithin 30 days.\n\n# Shipping\n\nTwo days.")
    kb_b = make_kb(world.b)
    ingest(world.b, kb_b, "policy.md", "# Refunds\n\nWithin 45 days, Bravo Inc rule.")
    body = admin.get(f"/t/alpha/knowledge/{kb.pk}/search/", {"q": "refund days"}, **HX).content.decode()
    assert body.index("Within 30 days.") < body.index("Two days.")  # ranked: the refund passage first
    assert "score " in body
    assert "45 days" not in body and "Bravo" not in body
    assert admin.get(f"/t/alpha/knowledge/{kb_b.pk}/search/", {"q": "refund"}).status_code == 404


def test_the_admin_chooses_which_bases_an_agent_reads(admin, world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    kb = make_kb(world.a)
    make_kb(world.a, name="Other")
    response = admin.post("/t/alpha/knowledge/agents/", {"agent": catalogue.helpdesk.pk, "knowledge_bases": [kb.pk]})
    assert response.status_code == 302
    with tenant_context(world.a.tenant):
        assert list(AgentKnowledge.objects.values_list("knowledge_base_id", flat=True)) == [kb.pk]
    kb_b = make_kb(world.b)
    admin.post("/t/alpha/knowledge/agents/", {"agent": catalogue.helpdesk.pk, "knowledge_bases": [kb_b.pk]})
    with tenant_context(world.a.tenant):
        assert list(AgentKnowledge.objects.values_list("knowledge_base_id", flat=True)) == [kb.pk]


def test_members_read_cited_documents_but_do_not_manage(client, world):
    from tests.agents.helpers import make_catalogue

    entitle(world.a.tenant)
    make_catalogue(world.a.tenant)  # the helpdesk, enabled for members, reads every base
    kb = make_kb(world.a)
    document = ingest(world.a, kb, "policy.txt", "Refunds within 30 days.")
    client.force_login(world.a.member)
    assert client.get("/t/alpha/knowledge/").status_code == 403
    page = client.get(f"/t/alpha/knowledge/documents/{document.pk}/").content.decode()
    assert "Refunds within 30 days." in page


def test_it_says_when_the_plan_does_not_include_knowledge_bases(client, world):
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/knowledge/").content.decode()
    assert 'id="kb-not-in-tier"' in page
    assert 'id="kb-create-form"' not in page


def test_the_sidebar_links_to_knowledge_for_admins_only(client, world):
    client.force_login(world.a.admin)
    assert 'href="/t/alpha/knowledge/"' in client.get("/t/alpha/").content.decode()
    client.force_login(world.a.member)
    assert 'href="/t/alpha/knowledge/"' not in client.get("/t/alpha/").content.decode()
