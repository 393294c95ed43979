"""The access policy of memory namespaces (agents/memory/policy.py), as a table."""

from __future__ import annotations

import pytest

from agents.memory import policy
from agents.memory.policy import Namespace

T, OTHER_T, U, OTHER_U = 1, 2, 10, 11


@pytest.mark.parametrize(
    ("namespace", "tenant", "user", "readable"),
    [
        (Namespace(T, U, "helpdesk"), T, U, True),
        (Namespace(T, U), T, U, True),
        (Namespace(T), T, U, True),  # the tenant's shared facts: every member's agents read them
        (Namespace(T, U, "helpdesk"), T, OTHER_U, False),  # another member's
        (Namespace(T, U), T, OTHER_U, False),
        (Namespace(T, U, "helpdesk"), OTHER_T, U, False),  # another tenant's (same user id)
        (Namespace(T), OTHER_T, U, False),
        (Namespace(T, U), T, None, False),  # nobody acting
    ],
)
def test_who_may_read(namespace, tenant, user, readable):
    assert policy.can_read(namespace, tenant_id=tenant, user_id=user) is readable


@pytest.mark.parametrize(
    ("namespace", "user", "role", "writable"),
    [
        (Namespace(T, U, "helpdesk"), U, "member", True),
        (Namespace(T, U), U, "member", True),
        (Namespace(T, U), OTHER_U, "admin", False),  # an admin never writes a member's memory
        (Namespace(T), U, "member", False),
        (Namespace(T), U, "billing", False),
        (Namespace(T), U, "admin", True),
        (Namespace(T), U, "owner", True),
        (Namespace(T, U), U, None, False),  # no longer a member
    ],
)
def test_who_may_write(namespace, user, role, writable):
    assert policy.can_write(namespace, tenant_id=T, user_id=user, role=role) is writable
    assert policy.can_write(namespace, tenant_id=OTHER_T, user_id=user, role=role) is False


@pytest.mark.parametrize("path", ["/tenant/1/user/10/agent/helpdesk", "/tenant/1/user/10", "/tenant/1/shared"])
def test_paths_round_trip(path):
    assert policy.parse(path).path == path


@pytest.mark.parametrize(
    "path",
    ["", "/tenant/x/shared", "/tenant/1/user/", "/tenant/1/user/10/agent/", "/tenant/1/shared/extra", "tenant/1"],
)
def test_other_paths_are_no_namespace(path):
    assert policy.parse(path) is None


def test_a_recall_reads_the_agent_then_the_member_then_the_shared_namespace():
    spaces = policy.readable_namespaces(tenant_id=T, user_id=U, agent_slug="helpdesk")
    assert [s.path for s in spaces] == ["/tenant/1/user/10/agent/helpdesk", "/tenant/1/user/10", "/tenant/1/shared"]
    assert all(policy.can_read(s, tenant_id=T, user_id=U) for s in spaces)
