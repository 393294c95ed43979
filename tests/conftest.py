"""Shared fixtures: the database set up as on production, and two tenants.

On PostgreSQL the test database is created and migrated as the schema owner
(DATABASE_OWNER_URL) and the tests then connect as the application role
(DATABASE_URL), so row-level security is in force exactly as in production.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connections
from hypothesis import settings as hypothesis_settings

from tests import factories

# Property tests draw the same examples on every run: a red CI run is reproducible, and a
# run is never red by chance. (Explore with `--hypothesis-seed=N` to look for more.)
hypothesis_settings.register_profile("portal", derandomize=True, database=None)
hypothesis_settings.load_profile("portal")


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker):
    from django.test.utils import setup_databases, teardown_databases

    from portal.db.owner import as_owner

    verbosity = request.config.option.verbose
    with django_db_blocker.unblock():
        with as_owner():
            db_cfg = setup_databases(verbosity=verbosity, interactive=False, aliases={"default"})
            if settings.DATABASE_IS_POSTGRES:
                # pytest-django empties tables between transactional tests with TRUNCATE;
                # only the test run grants that to the application role.
                role = connections["default"].ops.quote_name(settings.DATABASE_APP_ROLE)
                with connections["default"].cursor() as cursor:
                    cursor.execute(f"GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO {role}")
    yield
    with django_db_blocker.unblock(), as_owner():
        if settings.DATABASE_IS_POSTGRES:
            # Worker, live-server and sync_to_async threads keep their own connections
            # open; DROP DATABASE would refuse while they exist. The owner may end them
            # (it is granted pg_signal_backend by .ci/run and the README's set-up).
            with connections["default"].cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        teardown_databases(db_cfg, verbosity=verbosity)


@pytest.fixture
def world(db):
    """Two tenants, each with an owner, an admin, a member and a billing user; plus an operator."""
    return factories.World.build()


@pytest.fixture
def operator(db):
    return factories.make_user("operator@portal.test", is_staff=True, is_superuser=True)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2 at production strength costs ~0.3 s per user; tests create dozens.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_signing_key_cache():
    # Keys live in the database, which each test rolls back or flushes; the
    # process-wide key cache must not carry a key over into the next test.
    from tenants.identity import keys

    keys.clear_cache()
    yield
    keys.clear_cache()


@pytest.fixture(autouse=True)
def _fresh_offerings_cache():
    # Tests change model offerings with queryset updates (no signals) and roll back.
    from agents.services import clear_offerings_cache

    clear_offerings_cache()
    yield
    clear_offerings_cache()


@pytest.fixture(autouse=True)
def _fresh_tenant_cache():
    # @tenant_task keeps tenants for a few seconds per process; tests change them with
    # queryset updates (no signals) and roll back, so each test starts without them.
    from tenants.tasks import forget_tenants

    forget_tenants()
    yield
    forget_tenants()


@pytest.fixture(autouse=True)
def _fresh_rate_limit_counters():
    # allauth counts sign-ins per address in Django's cache (at most 30 a minute from one
    # address by default), and every test signs in from 127.0.0.1: counters left by earlier
    # tests would refuse a later test's sign-in whenever the suite runs fast.
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _made_up_issuers_resolve_to_a_public_address(monkeypatch):
    # Saving an SSO issuer resolves its host name (tenants.identity.sso_http.check_host).
    # The tests' issuers live under .example (RFC 2606: never in real DNS); there, and
    # only there, they resolve to a public address, so no test asks a real resolver and
    # no connection ever goes to that address. Other names go to socket.getaddrinfo,
    # which a test patches to answer what it needs.
    from tenants.identity import sso_http

    real_resolve = sso_http.resolve

    def resolve(host, port):
        if host.lower().rstrip(".").endswith(".example"):
            return ["93.184.215.14"]
        return real_resolve(host, port)

    monkeypatch.setattr(sso_http, "resolve", resolve)
