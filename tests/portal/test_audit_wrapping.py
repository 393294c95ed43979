"""Long addresses, action codes and values in the audit log wrap between their parts (after the
@, a dot, an underscore, a slash …), never inside a word: the `breakable` filter offers the
browser a break (<wbr>) there, and the stylesheet breaks a token anywhere only in the value cells,
as a last resort for one with no parts (an IdP subject, a key). How the pages look at 1280 and
390 px is tests/e2e/test_wide_tables.py's."""

from __future__ import annotations

import pytest

from portal.templatetags.portal_format import breakable
from tenants import audit
from tenants.context import tenant_context

pytestmark = pytest.mark.django_db

LONG_EMAIL = "jacqueline.vanderberghe@subsidiary.alpha-international.test"


def test_it_offers_a_break_after_each_part_of_an_address_or_a_code():
    assert breakable(LONG_EMAIL) == ("jacqueline.<wbr>vanderberghe@<wbr>subsidiary.<wbr>alpha-international.<wbr>test")
    assert breakable("knowledge_base.document_uploaded") == "knowledge_<wbr>base.<wbr>document_<wbr>uploaded"
    assert breakable("https://x.test/a/b") == "https:<wbr>/<wbr>/<wbr>x.<wbr>test/<wbr>a/<wbr>b"


def test_it_leaves_words_whole_and_escapes_the_rest():
    assert breakable("Changed after a call") == "Changed after a call"
    assert breakable("6000.00 in v1.2") == "6000.00 in v1.2"  # numbers stay whole
    assert breakable('<b a="1">x&y</b>') == "&lt;b a=<wbr>&quot;1&quot;&gt;x&amp;<wbr>y&lt;/<wbr>b&gt;"
    assert breakable(None) == ""


def test_the_audit_table_offers_breaks_in_the_actor_action_target_and_values(client, world):
    with tenant_context(world.a.tenant):
        audit.record(
            "knowledge_base.document_reingestion_requested",
            actor=world.a.admin,
            tenant=world.a.tenant,
            target_repr="quarterly_compliance_report.final.pdf",
            after={"email": LONG_EMAIL, "links": [{"uid": "okta|00u1abc"}]},
        )
    client.force_login(world.a.owner)

    page = client.get("/t/alpha/audit/").content.decode()

    assert "knowledge_<wbr>base.<wbr>document_<wbr>reingestion_<wbr>requested" in page
    assert "quarterly_<wbr>compliance_<wbr>report.<wbr>final.<wbr>pdf" in page
    assert breakable(LONG_EMAIL) in page  # in the value cell
    assert "okta|<wbr>00u1abc" in page
    assert f'<td class="actor">{breakable(world.a.admin.email)}</td>' in page
