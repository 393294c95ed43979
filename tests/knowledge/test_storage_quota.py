"""Each tier allows its tenants so much knowledge storage (U2).

The bytes of a tenant's stored documents (every knowledge base, the current version of
each document) count against its tier's `knowledge_storage_mb`; an upload that would
go over it is refused, saying what is used and what the limit is. Deleting a document
frees its space, and a new version replaces the old one's bytes.
"""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from agents.knowledge import services
from agents.knowledge.models import Document
from tenants.context import tenant_context
from tenants.services import ServiceError
from tests.knowledge.helpers import actor_for, entitle, make_kb, upload

MB = 1024 * 1024
BIG = b"x" * 700_000  # 0.7 MB: one fits in a 1 MB allowance, two do not


@pytest.fixture
def small_tier(world):
    entitle(world.a.tenant, world.b.tenant)
    tier = world.a.tenant.tier
    tier.knowledge_storage_mb = 1
    tier.save(update_fields=["knowledge_storage_mb"])
    for side in (world.a, world.b):
        side.tenant.refresh_from_db()
    return tier


def test_it_refuses_an_upload_that_would_exceed_the_tiers_storage_and_says_why(world, small_tier):
    kb = make_kb(world.a)
    upload(world.a, kb, "one.txt", BIG)
    with pytest.raises(ServiceError) as refused:
        upload(world.a, kb, "two.txt", BIG + b"y")
    text = refused.value.messages[0]
    assert "two.txt (0.7 MB) does not fit" in text
    assert "0.7 MB of 1 MB used" in text
    with tenant_context(world.a.tenant):
        assert list(Document.objects.values_list("filename", flat=True)) == ["one.txt"]


def test_every_knowledge_base_of_the_tenant_counts_and_other_tenants_do_not(world, small_tier):
    upload(world.b, make_kb(world.b), "theirs.txt", BIG)  # another tenant's bytes are its own
    upload(world.a, make_kb(world.a, "Handbook"), "one.txt", BIG)
    with pytest.raises(ServiceError):
        upload(world.a, make_kb(world.a, "Policies"), "two.txt", BIG + b"y")


def test_deleting_a_document_frees_its_space(world, small_tier):
    kb = make_kb(world.a)
    first = upload(world.a, kb, "one.txt", BIG).document
    with tenant_context(world.a.tenant):
        services.delete_document(actor_for(world.a), first)
    assert upload(world.a, kb, "two.txt", BIG + b"y").outcome == "created"


def test_a_new_version_counts_instead_of_the_old_one(world, small_tier):
    kb = make_kb(world.a)
    upload(world.a, kb, "one.txt", BIG)
    assert upload(world.a, kb, "one.txt", BIG + b"y" * 200_000).outcome == "new_version"
    with tenant_context(world.a.tenant):
        assert services.storage_used(world.a.tenant) == 900_000


def test_the_api_refuses_it_with_a_problem(client, world, small_tier):
    kb = make_kb(world.a)
    upload(world.a, kb, "one.txt", BIG)
    client.force_login(world.a.admin)
    response = client.post(
        "/api/v1/tenants/alpha/knowledge-documents/",
        {"knowledge_base": kb.pk, "file": SimpleUploadedFile("two.txt", BIG + b"y")},
    )
    assert response.status_code == 400
    assert "0.7 MB of 1 MB used" in response.json()["detail"]


def test_the_knowledge_pages_show_what_is_used_of_the_allowance(client, world, small_tier):
    kb = make_kb(world.a)
    upload(world.a, kb, "one.txt", BIG)
    client.force_login(world.a.admin)
    for url in ("/t/alpha/knowledge/", f"/t/alpha/knowledge/{kb.pk}/"):
        page = client.get(url).content.decode()
        assert 'id="kb-storage"' in page
        assert "0.7 MB of 1 MB" in page
        assert '<progress value="700000" max="1048576"' in page


def test_the_operator_sets_a_tiers_storage(client, world, operator):
    from tests.tenants.test_views import tier_form

    client.force_login(operator)
    form = tier_form(
        slug="standard-test", celery_queue="tier-standard-test", allowed_models="", knowledge_storage_mb="2048"
    )
    page = client.get("/operator/tiers/standard-test/").content.decode()
    assert 'name="knowledge_storage_mb"' in page
    assert client.post("/operator/tiers/standard-test/", form).status_code in (200, 302)
    world.a.tenant.tier.refresh_from_db()
    assert world.a.tenant.tier.knowledge_storage_mb == 2048


def test_the_demo_tiers_allow_more_storage_on_larger_plans():
    from tenants.management.commands.seed_demo import TIERS

    storage = {spec["slug"]: spec["knowledge_storage_mb"] for spec in TIERS}
    assert 0 < storage["basic"] < storage["standard"] < storage["premium"]


# --- two uploads at once (PostgreSQL: two connections, row locks) ------------------------------------


# SQLite takes its one write lock at BEGIN (IMMEDIATE: portal/settings.py), so uploads queue there.
@pytest.mark.skipif(not settings.DATABASE_IS_POSTGRES, reason="watches PostgreSQL's lock waits")
@pytest.mark.django_db(transaction=True)
def test_two_uploads_at_once_cannot_both_pass_the_check(world, small_tier):
    """The first upload's transaction stays open while the second runs: the second must
    wait for it (the tenant's row is locked for the check) and then see its bytes. Without
    the lock the second would see 0 bytes used and both would be stored."""
    kb = make_kb(world.a)
    first_stored, release = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def first():
        from django.db import transaction

        try:
            with transaction.atomic():
                outcomes["first"] = upload(world.a, kb, "one.txt", BIG).outcome
                first_stored.set()
                release.wait()
        finally:
            connection.close()

    def second():
        try:
            outcomes["second"] = upload(world.a, kb, "two.txt", BIG + b"y").outcome
        except ServiceError as exc:
            outcomes["second"] = exc.messages[0]
        finally:
            connection.close()

    one = threading.Thread(target=first)
    one.start()
    first_stored.wait()
    two = threading.Thread(target=second)
    two.start()
    # Let the first commit once the second is waiting for a lock, or has finished (the bug).
    while two.is_alive() and not _someone_waits_for_a_lock():
        two.join(0.05)
    release.set()
    one.join()
    two.join()
    assert outcomes["first"] == "created"
    assert "does not fit" in str(outcomes["second"])
    with tenant_context(world.a.tenant):
        assert list(Document.objects.values_list("filename", flat=True)) == ["one.txt"]


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_the_upload_screen_says_why_a_file_does_not_fit_and_the_table_brings_the_storage_along(
    client, world, small_tier
):
    kb = make_kb(world.a)
    upload(world.a, kb, "one.txt", BIG)
    client.force_login(world.a.admin)
    refused = client.post(
        f"/t/alpha/knowledge/{kb.pk}/upload/",
        {"files": SimpleUploadedFile("two.txt", BIG + b"y")},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        HTTP_ACCEPT="application/json",
    )
    assert refused.status_code == 400
    assert "0.7 MB of 1 MB used" in refused.json()["results"][0]["message"]
    fragment = client.get(f"/t/alpha/knowledge/{kb.pk}/documents/", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="kb-storage" hx-swap-oob="true"' in fragment


def test_a_tier_post_without_the_storage_keeps_it_and_a_bad_one_is_refused(client, world, operator):
    from tests.tenants.test_views import tier_form

    client.force_login(operator)
    form = tier_form(slug="standard-test", celery_queue="tier-standard-test", allowed_models="")
    assert client.post("/operator/tiers/standard-test/", form).status_code == 302
    world.a.tenant.tier.refresh_from_db()
    assert world.a.tenant.tier.knowledge_storage_mb == 1024
    refused = client.post("/operator/tiers/standard-test/", {**form, "knowledge_storage_mb": "-5"})
    assert refused.status_code == 400
    assert "knowledge_storage_mb" in refused.context["form"].errors
