"""Knowledge bases over the REST API: same services, same isolation, problem JSON for bad input."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.knowledge.models import Document
from tenants.context import tenant_context
from tests.knowledge.helpers import entitle, ingest, make_kb
from tests.portal.helpers import problem

BASE = "/api/v1/tenants/alpha"


@pytest.fixture
def api(client, world):
    entitle(world.a.tenant, world.b.tenant)
    client.force_login(world.a.admin)
    return client


def post_json(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_it_creates_uploads_lists_and_searches(api, world):
    created = post_json(api, f"{BASE}/knowledge-bases/", {"name": "Handbook", "chunk_size": 600})
    assert created.status_code == 201
    kb_id = created.json()["id"]
    upload = api.post(
        f"{BASE}/knowledge-documents/",
        {"knowledge_base": kb_id, "file": SimpleUploadedFile("p.md", b"# Refunds\n\nWithin 30 days.")},
    )
    assert upload.status_code == 201
    assert upload.json()["outcome"] == "created"
    document_id = upload.json()["document"]["id"]
    from agents.knowledge import services

    with tenant_context(world.a.tenant):
        services.ingest_document(world.a.tenant, document_id, 1)
    listed = api.get(f"{BASE}/knowledge-documents/?knowledge_base={kb_id}").json()
    assert [(d["id"], d["status"]) for d in listed["results"]] == [(document_id, "ready")]
    again = api.post(
        f"{BASE}/knowledge-documents/",
        {"knowledge_base": kb_id, "file": SimpleUploadedFile("p.md", b"# Refunds\n\nWithin 30 days.")},
    )
    assert (again.status_code, again.json()["outcome"]) == (200, "unchanged")
    found = post_json(api, f"{BASE}/knowledge-bases/{kb_id}/search/", {"query": "refund days", "k": 3}).json()
    assert found["passages"][0]["text"] == "Within 30 days."
    assert found["passages"][0]["score"] > 0


@pytest.mark.parametrize("k", [1, 5, 50])
def test_search_never_returns_another_tenants_passages(api, world, k):
    kb = make_kb(world.a)
    ingest(world.a, kb, "p.txt", "Refunds within 30 days.")
    kb_b = make_kb(world.b)
    ingest(world.b, kb_b, "p.txt", "Refunds within 45 days.")
    found = post_json(api, f"{BASE}/knowledge-bases/{kb.pk}/search/", {"query": "refunds within days", "k": k})
    assert [p["text"] for p in found.json()["passages"]] == ["Refunds within 30 days."]
    problem(post_json(api, f"{BASE}/knowledge-bases/{kb_b.pk}/search/", {"query": "refunds"}), 404)


def test_members_may_read_but_not_change(client, world):
    entitle(world.a.tenant)
    client.force_login(world.a.member)
    assert client.get(f"{BASE}/knowledge-bases/").status_code == 200
    problem(post_json(client, f"{BASE}/knowledge-bases/", {"name": "Mine"}), 403)


@pytest.mark.parametrize(
    "body",
    [{}, {"knowledge_base": "x"}, {"knowledge_base": 99999999}, {"knowledge_base": 1}],
    ids=["nothing", "bad-id", "unknown-base", "no-file"],
)
def test_a_bad_upload_is_a_problem_not_a_500(api, world, body):
    problem(api.post(f"{BASE}/knowledge-documents/", body), 400)


def test_bad_files_are_refused_with_the_reason(api, world, settings):
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 1024
    kb = make_kb(world.a)
    for name, data, reason in (("big.txt", b"x" * 2000, "larger than"), ("e.txt", b"", "empty")):
        body = problem(
            api.post(f"{BASE}/knowledge-documents/", {"knowledge_base": kb.pk, "file": SimpleUploadedFile(name, data)}),
            400,
        )
        assert reason in body["detail"]
    with tenant_context(world.a.tenant):
        assert Document.objects.count() == 0


@pytest.mark.parametrize(
    "body", [{}, {"query": ""}, {"query": "x", "k": 0}, {"query": "x", "k": 10**9}, {"query": ["x"]}]
)
def test_a_bad_search_is_a_problem(api, world, body):
    kb = make_kb(world.a)
    problem(post_json(api, f"{BASE}/knowledge-bases/{kb.pk}/search/", body), 400)


def test_deleting_through_the_api_removes_the_chunks(api, world):
    kb = make_kb(world.a)
    document = ingest(world.a, kb, "p.txt", "Refunds within 30 days.")
    assert api.delete(f"{BASE}/knowledge-documents/{document.pk}/").status_code == 204
    found = post_json(api, f"{BASE}/knowledge-bases/{kb.pk}/search/", {"query": "refunds"}).json()
    assert found["passages"] == []
    assert api.delete(f"{BASE}/knowledge-bases/{kb.pk}/").status_code == 204


def test_a_rename_keeps_the_description_it_does_not_send(api, world):
    created = post_json(api, f"{BASE}/knowledge-bases/", {"name": "Handbook", "description": "HR policies"}).json()

    renamed = api.patch(
        f"{BASE}/knowledge-bases/{created['id']}/",
        data=json.dumps({"name": "Staff handbook"}),
        content_type="application/json",
    )

    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["description"]) == ("Staff handbook", "HR policies")
    cleared = api.patch(
        f"{BASE}/knowledge-bases/{created['id']}/",
        data=json.dumps({"name": "Staff handbook", "description": ""}),
        content_type="application/json",
    )
    assert cleared.json()["description"] == ""
