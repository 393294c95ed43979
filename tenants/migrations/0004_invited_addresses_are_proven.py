"""Mark the addresses that accepted invitations proved as confirmed (allauth's verified flag).

Single sign-on now links an IdP identity only to an account that proved the
address (tenants/identity/sso.py accounts_with_email); invitations accepted
before accept_invitation() recorded that proof would otherwise lock their
members out of their tenant's SSO.
"""

from django.db import IntegrityError, migrations, transaction


def prove_invited_addresses(apps, schema_editor):
    from tenants.context import all_tenants

    Invitation = apps.get_model("tenants", "Invitation")
    EmailAddress = apps.get_model("account", "EmailAddress")
    # Invitations are tenant rows under row-level security; this reads them all once.
    with all_tenants("migration: record the addresses invitations proved"):
        accepted = list(
            Invitation.objects.filter(status="accepted", accepted_by__isnull=False).values_list(
                "accepted_by_id", "accepted_by__email", "email"
            )
        )
        for user_id, user_email, email in accepted:
            if user_email.lower() != email.lower():
                continue  # the account changed its address since; the invitation proves the old one
            try:
                with transaction.atomic():
                    if not EmailAddress.objects.filter(user_id=user_id, email__iexact=email).update(verified=True):
                        primary = not EmailAddress.objects.filter(user_id=user_id, primary=True).exists()
                        EmailAddress.objects.create(
                            user_id=user_id, email=email.lower(), verified=True, primary=primary
                        )
            except IntegrityError:
                pass  # another account confirmed the address first


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0003_tier_overage_allowed"),
        ("account", "0009_emailaddress_unique_primary_email"),
    ]

    operations = [migrations.RunPython(prove_invited_addresses, migrations.RunPython.noop)]
