"""`make run` on a fresh machine: the demo seed reaches no AWS service.

The embedded defaults (AGENT_RUNTIME=local, offline model, no AWS credentials) run the
demo's turns in-process. Initech, the silo demo tenant, keeps its AWS bindings (runtime
ARN, AgentCore Memory, Bedrock knowledge base: they show what the silo model is), but on
embedded defaults none of them is used: its turns, memories and knowledge are the
portal's own, and not one boto3 client is created.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from agents.demo_conversations import CONVERSATIONS
from agents.memory.models import MemoryRecord
from agents.models import Invocation, MessageStatus
from tenants.context import tenant_context
from tenants.models import Tenant
from tests.aws_guard import refuse_aws_clients

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_seeds_the_demo_on_embedded_defaults_without_creating_an_aws_client(settings, tmp_path, monkeypatch):
    settings.KNOWLEDGE_FILES_DIR = tmp_path
    settings.AGENT_RUNTIME = "local"
    asked = refuse_aws_clients(monkeypatch)

    call_command("seed_demo", verbosity=0)

    assert asked == []
    initech = Tenant.objects.get(slug="initech")
    bindings = initech.bindings
    assert bindings.dedicated and bindings.runtime_arn and bindings.memory_id and bindings.knowledge_base_id
    questions = [q for _person, _agent, asked_ in CONVERSATIONS["initech"] for q in asked_]
    with tenant_context(initech):
        turns = Invocation.objects.filter(user_message__content__in=questions).select_related("assistant_message")
        assert sorted(i.assistant_message.status for i in turns) == [MessageStatus.DONE] * len(questions)
        # The demo members' facts are kept in the portal's own store, as for Globex.
        assert MemoryRecord.objects.filter(user__email="member1@initech.example").count() == 3
