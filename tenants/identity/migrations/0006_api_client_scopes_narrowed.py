"""API clients keep only the scopes a client can use: the five read scopes.

Clients created before the API clients page offered only these may hold `agents:invoke`,
`kb:read` or write scopes. None of them works for a client (every change and chat needs a
person), but a token minted with them carried them, and a client's stored scopes are what
a take-over and the pause rule compare with a role. Each stored list is narrowed to the
allowed set, frozen here as it was when this migration was written
(tenants.identity.scopes.CLIENT_SCOPES); the token endpoint intersects with the live set too.
"""

from django.db import migrations

CLIENT_SCOPES = frozenset({"tenant:read", "members:read", "audit:read", "billing:read", "guardrails:read"})


def narrowed_to_what_a_client_can_use(apps, schema_editor):
    from tenants.context import all_tenants

    ApiClient = apps.get_model("identity", "ApiClient")
    # API clients are tenant rows under row-level security; this reads and updates them all once.
    with all_tenants("migration: API clients keep only the scopes a client can use"):
        for pk, scopes in list(ApiClient.objects.values_list("pk", "scopes")):
            kept = sorted(set(scopes if isinstance(scopes, list) else []) & CLIENT_SCOPES)
            if kept != scopes:
                ApiClient.objects.filter(pk=pk).update(scopes=kept)


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0005_api_client_credentials_generation"),
    ]

    operations = [
        migrations.RunPython(narrowed_to_what_a_client_can_use, migrations.RunPython.noop),
    ]
