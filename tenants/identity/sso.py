"""Enterprise single sign-on: one OpenID Connect connection per tenant.

A tenant on a tier with the "sso" feature registers the portal at its identity
provider (Okta, Entra ID, Cognito …) and claims the email domains its people
use. Then:

* signing in with an address of a claimed domain goes to that tenant's IdP
  (`begin_sign_in`, reached from the "Continue with single sign-on" step);
* the IdP is trusted for the addresses of the domains its tenant claims, and
  for nothing else (`admit`): it may create the account, link an existing one,
  and make the person a member with the connection's default role
  (`provision_membership`, "just in time");
* with `enforced`, the tenant opens only to sessions signed in through its IdP
  for the addresses of the claimed domains (`sso_required_to_enter`, checked by
  tenants.middleware.TenantMiddleware), and password sign-in is refused for those
  addresses unless the account also belongs to an organisation that does not
  require SSO (`password_refused_connection`, checked by
  tenants.adapters.AccountAdapter).

Each connection is mirrored into an allauth SocialApp (provider
"openid_connect", provider_id "tenant-<slug>") by `_sync_social_app`; allauth
does discovery, PKCE and the token call, tenants.identity.sso_provider adds the
nonce and verifies the ID token's signature. The client secret is kept here,
encrypted, and never copied into the SocialApp.

SSOConnection and SSODomain are platform data (sign-in finds them before any
tenant is known); memberships and invitations are read and written only inside
the tenant's context.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone

from tenants import audit, entitlements
from tenants.context import tenant_context, user_context
from tenants.identity import sso_http
from tenants.identity.models import SSO_DEFAULT_ROLES, SSOConnection, SSODomain
from tenants.models import Invitation, InvitationStatus, Membership, Tenant, TenantStatus, User
from tenants.roles import Action, Role, require
from tenants.services import Actor, ServiceError, _check_actor_tenant

logger = logging.getLogger(__name__)

PROVIDER = "openid_connect"
MAX_DOMAINS = 20
WELL_KNOWN = "/.well-known/openid-configuration"

# Mailbox providers shared by the public: no tenant may claim (and so take over
# the sign-in of) everyone who uses one of them.
PUBLIC_EMAIL_DOMAINS = frozenset(
    {
        "163.com",
        "aol.com",
        "fastmail.com",
        "gmail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "googlemail.com",
        "hey.com",
        "hotmail.com",
        "icloud.com",
        "live.com",
        "mac.com",
        "mail.com",
        "mail.ru",
        "me.com",
        "msn.com",
        "outlook.com",
        "pm.me",
        "proton.me",
        "protonmail.com",
        "qq.com",
        "web.de",
        "yahoo.com",
        "yandex.com",
        "yandex.ru",
        "ymail.com",
        "zoho.com",
    }
)

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class SSORefused(Exception):
    """A sign-in through a tenant's IdP that must not go ahead; `message` is shown to the person."""

    def __init__(self, message: str, *, status: int = 403):
        super().__init__(message)
        self.message = message
        self.status = status


# --- small pure helpers --------------------------------------------------------------


def provider_id_for(tenant: Tenant) -> str:
    return f"tenant-{tenant.slug}"


def callback_path(provider_id: str) -> str:
    """Where the IdP sends the browser back: the redirect URI the tenant registers."""
    return reverse("sso_callback", kwargs={"provider_id": provider_id})


def _fernet() -> Fernet:
    # Its own key (not the signing keys'), so a ciphertext copied from one column
    # into the other decrypts to nothing.
    digest = hashlib.sha256(f"sso-client-secret:{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def client_secret(connection: SSOConnection) -> str:
    """The decrypted client secret, for the token call only. Never shown or logged."""
    try:
        return _fernet().decrypt(connection.client_secret_encrypted.encode()).decode()
    except InvalidToken:
        # SECRET_KEY changed: the IdP will refuse the token call; the admin re-enters it.
        logger.error("SSO client secret of %s cannot be decrypted (SECRET_KEY changed?)", connection.provider_id)
        return ""


def email_domain(email: str) -> str:
    """The normalised domain of an address, or "" if it has none we could match."""
    local, at, domain = (email or "").strip().rpartition("@")
    if not at or not local:
        return ""
    try:
        return normalize_domain(domain)
    except ValidationError:
        return ""


def normalize_domain(raw: str) -> str:
    """`Example.COM.` → `example.com`; internationalised names become their xn-- form."""
    domain = (raw or "").strip().lstrip("@").rstrip(".").lower()
    if domain and not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValidationError(f"{raw!s} is not a valid domain name.")
    if len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain):
        shown = raw if len(raw) <= 80 else raw[:77] + "…"
        raise ValidationError(f"“{shown}” is not a domain name like example.com.")
    return domain


def split_domains(text: str) -> list[str]:
    """The domains an admin typed: one per line, or separated by commas or spaces."""
    return [part for part in re.split(r"[\s,;]+", text or "") if part]


def clean_issuer(raw: str) -> str:
    """The issuer URL, checked: https, a host, no credentials, query or fragment.

    http:// and loopback or private addresses are allowed only with
    SSO_ALLOW_LOOPBACK_ISSUERS (development and the test IdP): the portal fetches
    the discovery document, keys and tokens from here, so an issuer must never
    point the server at itself or at the internal network. The URL is checked,
    then what its host name resolves to now (sso_http.check_host), for a clear
    form error at save; what a name resolves to later is checked again on every
    connection (tenants.identity.sso_http).
    """
    url = (raw or "").strip()
    if url.endswith(WELL_KNOWN):
        url = url[: -len(WELL_KNOWN)]
    if not url or len(url) > 500 or _CONTROL_RE.search(url) or " " in url:
        raise ValidationError("Enter the issuer URL of your identity provider, e.g. https://login.example.com.")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValidationError("This is not a valid URL.")
    if parts.scheme not in ("https", "http") or not host:
        raise ValidationError("Enter the issuer URL of your identity provider, e.g. https://login.example.com.")
    if parts.username or parts.password:
        raise ValidationError("The issuer URL must not contain a user name or password.")
    if parts.query or parts.fragment:
        raise ValidationError("The issuer URL has no query string or fragment (OpenID Connect Discovery).")
    internal = _is_internal_host(host)
    if settings.SSO_ALLOW_LOOPBACK_ISSUERS and internal:
        return url
    if parts.scheme != "https":
        raise ValidationError("The issuer URL must start with https://.")
    if internal:
        raise ValidationError("The issuer must be a public address of your identity provider.")
    try:
        sso_http.check_host(host, parts.port or 443)
    except sso_http.UnresolvableHost:
        raise ValidationError(f"The issuer's host name {host} could not be found. Check the issuer URL.")
    except sso_http.NonPublicAddress as exc:
        raise ValidationError(f"{exc} The issuer must be a public address of your identity provider.")
    return url


def _is_internal_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".internal") or host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare name resolves only on the internal network
    return not address.is_global


# --- lookups -----------------------------------------------------------------------------


def connection_of(tenant: Tenant) -> SSOConnection | None:
    return SSOConnection.objects.filter(tenant=tenant).prefetch_related("domains").first()


def connection_for_provider_id(provider_id: str) -> SSOConnection | None:
    if not isinstance(provider_id, str) or not provider_id.startswith("tenant-") or len(provider_id) > 64:
        return None
    return (
        SSOConnection.objects.select_related("tenant", "tenant__tier")
        .prefetch_related("domains")
        .filter(provider_id=provider_id)
        .first()
    )


def domains_of(connection: SSOConnection) -> list[str]:
    return sorted(d.domain for d in connection.domains.all())


def trusted_domains_of(connection: SSOConnection) -> list[str]:
    """The claimed domains whose addresses the tenant's IdP may sign in: the verified ones."""
    return sorted(d.domain for d in connection.domains.all() if _trusted(d))


def _trusted(claim: SSODomain) -> bool:
    return claim.verified_at is not None or not settings.SSO_VERIFY_DOMAINS


def is_usable(connection: SSOConnection) -> bool:
    """Enabled, the tenant active, and its tier (or a grant) includes SSO."""
    tenant = connection.tenant
    return connection.enabled and tenant.is_active and entitlements.has_feature(tenant, "sso")


def usable_connection_for_email(email: str) -> SSOConnection | None:
    """The SSO connection that signs this address in, if any."""
    domain = email_domain(email)
    if not domain:
        return None
    claims = SSODomain.objects.select_related("connection__tenant__tier").filter(domain=domain)
    if settings.SSO_VERIFY_DOMAINS:
        claims = claims.filter(verified_at__isnull=False)
    claim = claims.order_by("pk").first()
    # An unverified claim routes nobody: a tenant cannot send another organisation's
    # people to its own IdP by typing their domain (first come, first served).
    if claim is None or not _trusted(claim) or not is_usable(claim.connection):
        return None
    return claim.connection


def enforced_connection_for_email(email: str) -> SSOConnection | None:
    """The connection that makes SSO mandatory for this address (password sign-in refused)."""
    connection = usable_connection_for_email(email)
    if connection is None or not connection.enforced:
        return None
    # Operators keep their password: a tenant's domain claim never locks them out.
    if User.objects.filter(email__iexact=email.strip(), is_staff=True).exists():
        return None
    return connection


def password_refused_connection(email: str) -> SSOConnection | None:
    """The connection that refuses password sign-in for this address, if any.

    Requiring SSO closes the requiring tenant to every session that did not come
    through its IdP (`sso_required_to_enter`); it does not take the account away
    from the other organisations it belongs to. So the password is refused
    outright only where it could open nothing: no account holds the address, or
    every active organisation the account belongs to is the one requiring SSO
    (a domain is verified by one tenant only, so at most one requires it). A
    person who also works in a tenant without that requirement signs in with
    their password there, and enters the requiring tenant only through its IdP.
    """
    connection = enforced_connection_for_email(email)
    if connection is None:
        return None
    email = email.strip()
    users = {user.pk: user for user in User.objects.filter(email__iexact=email)}
    users.update((user.pk, user) for user in accounts_with_email(email))
    for user in users.values():
        with user_context(user.pk):
            elsewhere = Membership.of_user(user).exclude(tenant_id=connection.tenant_id)
            if elsewhere.filter(tenant__status=TenantStatus.ACTIVE).exists():
                return None
    return connection


def sso_required_to_enter(request: HttpRequest, user: User, tenant: Tenant) -> SSOConnection | None:
    """The tenant's connection if it requires SSO for `user` and this session did not sign in through it.

    Enforced for the addresses of the tenant's verified domains (the people its IdP
    can sign in), whatever else the account belongs to; operators are exempt as for
    password sign-in. A sign-in through the tenant's IdP is recorded in the session
    by allauth (its authentication records, method "socialaccount").
    """
    from allauth.account.internal.flows.login import get_authentication_records

    connection = enforced_connection_for_email(user.email or "")
    if connection is None or connection.tenant_id != tenant.pk:
        return None
    for record in get_authentication_records(request, user):
        if record.get("method") == "socialaccount" and record.get("provider") == connection.provider_id:
            return None
    return connection


def enforced_message(email: str) -> str:
    return (
        f"Addresses at {email_domain(email)} sign in through your organisation's single sign-on. "
        "Choose “Continue with single sign-on” instead of entering a password."
    )


# --- administrative actions -------------------------------------------------------------

AUDIT_FIELDS = ["issuer", "client_id", "domains", "default_role", "enforced", "enabled"]


def _snapshot(connection: SSOConnection | None, domains: list[str] | None = None) -> dict:
    if connection is None:
        return {}
    data = audit.snapshot(connection, [f for f in AUDIT_FIELDS if f != "domains"])
    data["domains"] = domains if domains is not None else domains_of(connection)
    return data


def _validate(
    tenant: Tenant,
    actor: Actor,
    existing: SSOConnection | None,
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    domains: list[str],
    default_role: str,
    enforced: bool,
    enabled: bool,
) -> tuple[dict, list[str]]:
    """Every field checked at once, so the form shows every problem; raises ServiceError(dict)."""
    errors: dict[str, list[str]] = {}
    cleaned: dict = {}

    try:
        cleaned["issuer"] = clean_issuer(issuer)
    except ValidationError as exc:
        errors["issuer"] = exc.messages

    client_id = (client_id or "").strip()
    if not client_id or len(client_id) > 255 or _CONTROL_RE.search(client_id) or " " in client_id:
        errors["client_id"] = ["Enter the client ID your identity provider gave the portal (up to 255 characters)."]
    cleaned["client_id"] = client_id

    client_secret = (client_secret or "").strip()
    if client_secret and (len(client_secret) > 1000 or _CONTROL_RE.search(client_secret)):
        errors["client_secret"] = ["The client secret must be at most 1000 printable characters."]
    elif not client_secret and existing is None:
        errors["client_secret"] = ["Enter the client secret your identity provider gave the portal."]
    cleaned["client_secret"] = client_secret

    normalized: list[str] = []
    domain_errors: list[str] = []
    if isinstance(domains, str):
        domains = split_domains(domains)
    for raw in domains or []:
        try:
            domain = normalize_domain(raw)
        except ValidationError as exc:
            domain_errors.extend(exc.messages)
            continue
        if domain in PUBLIC_EMAIL_DOMAINS:
            domain_errors.append(f"{domain} is a public email provider; only your organisation's own domains.")
        elif domain not in normalized:
            normalized.append(domain)
    if not domain_errors:
        if not normalized:
            domain_errors.append("Claim at least one email domain, e.g. example.com.")
        elif len(normalized) > MAX_DOMAINS:
            domain_errors.append(f"At most {MAX_DOMAINS} domains per connection.")
    if not domain_errors:
        mine = existing.pk if existing is not None else None
        others = SSODomain.objects.filter(domain__in=normalized).exclude(connection_id=mine)
        if settings.SSO_VERIFY_DOMAINS:
            # An unverified claim elsewhere does not block: whoever proves the domain keeps it.
            others = others.filter(verified_at__isnull=False)
        for domain in sorted(others.values_list("domain", flat=True)):
            domain_errors.append(
                f"{domain} is already verified by another organisation. Contact support if it is yours."
            )
        for domain in normalized:
            if User.objects.filter(email__iendswith=f"@{domain}", is_staff=True).exists():
                domain_errors.append(f"{domain} is reserved by the platform.")
    if domain_errors:
        errors["domains"] = domain_errors
    cleaned["domains"] = sorted(normalized)

    if default_role not in {value for value, _ in SSO_DEFAULT_ROLES}:
        errors["default_role"] = ["New members can join as Member, Billing or Admin (never Owner)."]
    cleaned["default_role"] = default_role

    cleaned["enforced"] = bool(enforced)
    cleaned["enabled"] = bool(enabled)
    if cleaned["enforced"] and cleaned["enabled"] and email_domain(actor.user.email) in cleaned["domains"]:
        # Making SSO mandatory for one's own domain before it has worked once could
        # lock every admin out; insist on a successful SSO sign-in first.
        from allauth.socialaccount.models import SocialAccount

        provider_id = existing.provider_id if existing is not None else provider_id_for(tenant)
        if not SocialAccount.objects.filter(user=actor.user, provider=provider_id).exists():
            errors["enforced"] = [
                "Sign in once through single sign-on yourself before making it mandatory, "
                "so that a mistake in these settings cannot lock everyone out."
            ]

    if errors:
        raise ServiceError(errors)
    return cleaned, cleaned["domains"]


def save_sso_connection(
    actor: Actor,
    *,
    issuer: str,
    client_id: str,
    client_secret: str = "",
    domains: list[str],
    default_role: str = Role.MEMBER,
    enforced: bool = False,
    enabled: bool = True,
) -> SSOConnection:
    """Create or change the current tenant's SSO connection. A blank secret keeps the stored one.

    Admins may change the domains, the policy and the secret; which identity provider
    it is (setting it up, its issuer, its client id) is for owners only
    (Action.MANAGE_SSO_PROVIDER). A new issuer is a new IdP: the links of accounts to
    the old one's subjects are removed and every domain must be proved again
    (`_forget_the_old_provider`).
    """
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_SSO)
    if not entitlements.has_feature(tenant, "sso"):
        raise ServiceError(f"Single sign-on is not included in the {tenant.tier.name} tier.")
    existing = connection_of(tenant)
    cleaned, new_domains = _validate(
        tenant,
        actor,
        existing,
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        domains=domains,
        default_role=default_role,
        enforced=enforced,
        enabled=enabled,
    )
    issuer_changed = existing is not None and not same_issuer(existing.issuer, cleaned["issuer"])
    if existing is None or issuer_changed or cleaned["client_id"] != existing.client_id:
        require(actor.role, Action.MANAGE_SSO_PROVIDER)
    before = _snapshot(existing)
    connection = existing or SSOConnection(
        tenant=tenant, provider_id=provider_id_for(tenant), created_by=actor.user, secret_updated_at=timezone.now()
    )
    for field in ("issuer", "client_id", "default_role", "enforced", "enabled"):
        setattr(connection, field, cleaned[field])
    secret_changed = bool(cleaned["client_secret"]) and (
        existing is None or cleaned["client_secret"] != client_secret_of_or_blank(existing)
    )
    after = _snapshot(connection, new_domains)
    changed = {k for k in after if before.get(k) != after[k]}
    if existing is not None and not changed and not secret_changed:
        return existing
    if secret_changed:
        connection.client_secret_encrypted = encrypt_secret(cleaned["client_secret"])
        connection.secret_updated_at = timezone.now()

    try:
        with transaction.atomic():
            connection.save()
            SSODomain.objects.filter(connection=connection).exclude(domain__in=new_domains).delete()
            present = set(SSODomain.objects.filter(connection=connection).values_list("domain", flat=True))
            SSODomain.objects.bulk_create(
                [SSODomain(connection=connection, domain=d) for d in new_domains if d not in present]
            )
            _sync_social_app(connection, new_domains)
            forgotten = _forget_the_old_provider(connection) if issuer_changed else {}
            audit.record(
                "sso.created" if existing is None else "sso.updated",
                actor=actor.user,
                tenant=tenant,
                target=connection,
                target_repr=f"Single sign-on ({connection.issuer})",
                before={k: before[k] for k in sorted(changed) if k in before},
                after={
                    **{k: after[k] for k in sorted(changed)},
                    **({"client_secret": "replaced" if existing else "set"} if secret_changed else {}),
                    **forgotten,
                },
                ip=actor.ip,
            )
    except IntegrityError:
        # A domain claimed elsewhere, or these settings saved by someone else, meanwhile.
        raise ServiceError("These settings changed meanwhile or a domain was just claimed elsewhere; try again.")
    connection._prefetched_objects_cache = {}
    return connection


def same_issuer(a: str, b: str) -> bool:
    return (a or "").rstrip("/") == (b or "").rstrip("/")


def _forget_the_old_provider(connection: SSOConnection) -> dict:
    """The issuer changed: nothing the old IdP vouched for carries over to the new one.

    An account link is (provider id, subject), and subjects are the IdP's own names: the
    new IdP could assert the old one's subject of the owner and get the owner's account.
    So every link goes (people are linked again at their next SSO sign-in, by the checks
    a first sign-in gets), and each domain claim goes back to unproved with a new
    challenge, so that the domain's DNS, not whoever changed the issuer, decides whether
    the new IdP speaks for its addresses. Returned for the audit entry.
    """
    from allauth.socialaccount.models import SocialAccount

    links = SocialAccount.objects.filter(provider=connection.provider_id)
    removed = links.count()
    links.delete()  # their tokens with them
    unverified = []
    for claim in SSODomain.objects.filter(connection=connection).order_by("domain"):
        if claim.verified_at is not None:
            unverified.append(claim.domain)
        claim.verified_at = None
        claim.verified_by = ""
        claim.verification_token = SSODomain._meta.get_field("verification_token").get_default()
        claim.save(update_fields=["verified_at", "verified_by", "verification_token"])
    return {"account_links_removed": removed, "domains_unverified": unverified}


# --- domain verification (DNS TXT) ---------------------------------------------------------

CHALLENGE_LABEL = "_tenant-portal-challenge"
CHALLENGE_PREFIX = "tenant-portal-verification="


def challenge_record(claim: SSODomain) -> tuple[str, str]:
    """The TXT record that proves control of the domain: (name, value)."""
    return f"{CHALLENGE_LABEL}.{claim.domain}", f"{CHALLENGE_PREFIX}{claim.verification_token}"


def _txt_values(name: str) -> list[str]:
    """The TXT strings at `name`. Raises ServiceError with a reason a person can act on."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not settings.SSO_DNS_NAMESERVERS)
    if settings.SSO_DNS_NAMESERVERS:
        host, _, port = settings.SSO_DNS_NAMESERVERS[0].partition(":")
        resolver.nameservers = [host]
        resolver.port = int(port or 53)
    resolver.lifetime = settings.SSO_DNS_TIMEOUT_SECONDS
    try:
        answer = resolver.resolve(name, "TXT", raise_on_no_answer=True)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise ServiceError(f"There is no TXT record at {name} yet. DNS changes can take a while to appear.")
    except dns.exception.Timeout:
        raise ServiceError("The DNS lookup timed out. Try again in a moment.")
    except dns.exception.DNSException as exc:
        logger.info("DNS lookup of %s failed: %s", name, exc)
        raise ServiceError(f"The DNS lookup of {name} failed. Try again in a moment.")
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def _claim_of(tenant: Tenant, domain: str) -> SSODomain:
    claim = (
        SSODomain.objects.select_related("connection")
        .filter(connection__tenant=tenant, domain=normalize_domain_or_blank(domain))
        .first()
    )
    if claim is None:
        raise ServiceError("Your single sign-on does not claim this domain.")
    return claim


def normalize_domain_or_blank(raw) -> str:
    try:
        return normalize_domain(raw) if isinstance(raw, str) else ""
    except ValidationError:
        return ""


def verify_domain(actor: Actor, domain: str) -> SSODomain:
    """Check the domain's challenge TXT record and, if it is there, trust the claim."""
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_SSO)
    claim = _claim_of(tenant, domain)
    if claim.verified_at is not None:
        return claim
    name, expected = challenge_record(claim)
    if expected not in (value.strip() for value in _txt_values(name)):
        raise ServiceError(f"The TXT record at {name} does not hold {expected} yet.")
    return _mark_verified(claim, tenant, by="dns", actor=actor.user, ip=actor.ip)


def operator_verify_domain(tenant: Tenant, domain: str, *, actor, ip: str | None = None) -> SSODomain:
    """An operator vouches for the claim (checked by other means, e.g. an air-gapped DNS)."""
    with tenant_context(tenant):
        return _mark_verified(_claim_of(tenant, domain), tenant, by="operator", actor=actor, ip=ip)


def _mark_verified(claim: SSODomain, tenant: Tenant, *, by: str, actor, ip) -> SSODomain:
    try:
        with transaction.atomic():
            _verify_claim(claim, tenant, by=by, actor=actor, ip=ip)
    except IntegrityError:
        raise ServiceError(f"{claim.domain} was just verified by another organisation.")
    claim.refresh_from_db()
    return claim


def _verify_claim(claim: SSODomain, tenant: Tenant, *, by: str, actor, ip) -> None:
    now = timezone.now()
    if not SSODomain.objects.filter(pk=claim.pk, verified_at__isnull=True).update(verified_at=now, verified_by=by):
        return  # verified meanwhile
    audit.record(
        "sso.domain_verified",
        actor=actor,
        tenant=tenant,
        target=claim.connection,
        target_repr=f"Domain {claim.domain}",
        after={"domain": claim.domain, "verified_by": by},
        ip=ip,
    )
    # The proof settles the domain: other organisations' pending claims of it go, and
    # each of them finds out why in its own audit log. The platform removes them: the
    # person (and address) who proved it belong to another tenant and stay out of this log.
    others = SSODomain.objects.select_related("connection__tenant").filter(domain=claim.domain).exclude(pk=claim.pk)
    for other in others:
        with tenant_context(other.connection.tenant):  # its own log, under its row-level security
            audit.record(
                "sso.domain_claim_removed",
                actor=None,
                tenant=other.connection.tenant,
                target=other.connection,
                target_repr=f"Domain {other.domain}",
                before={"domain": other.domain},
                after={"reason": "another organisation proved control of the domain", "by": "platform"},
                ip=None,
            )
        other.delete()


def client_secret_of_or_blank(connection: SSOConnection) -> str:
    return client_secret(connection) if connection.client_secret_encrypted else ""


def disable_sso_connection(actor: Actor) -> SSOConnection:
    """Switch SSO off: sign-in through the IdP stops, password sign-in works again.

    The settings and domain claims are kept, so switching it on again is one save.
    """
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_SSO)
    connection = connection_of(tenant)
    if connection is None:
        raise ServiceError("Single sign-on is not set up.")
    with transaction.atomic():
        changed = SSOConnection.objects.filter(pk=connection.pk, enabled=True).update(
            enabled=False, updated_at=timezone.now()
        )
        if changed != 1:
            raise ServiceError("Single sign-on is already switched off.")
        connection.enabled = False
        _sync_social_app(connection, domains_of(connection))
        audit.record(
            "sso.disabled",
            actor=actor.user,
            tenant=tenant,
            target=connection,
            target_repr=f"Single sign-on ({connection.issuer})",
            before={"enabled": True},
            after={"enabled": False},
            ip=actor.ip,
        )
    return connection


def force_disable_sso(tenant: Tenant, *, reason: str, actor=None, ip: str | None = None) -> SSOConnection | None:
    """The platform's way out when a tenant's IdP is broken and SSO is required
    (`manage.py sso_disable`): switch it off without a tenant admin. Audited."""
    if not reason.strip():
        raise ServiceError("Say why single sign-on is switched off; the tenant's admins see it in their audit log.")
    connection = connection_of(tenant)
    if connection is None:
        return None
    with transaction.atomic(), tenant_context(tenant):
        before = {"enabled": connection.enabled, "enforced": connection.enforced}
        SSOConnection.objects.filter(pk=connection.pk).update(enabled=False, updated_at=timezone.now())
        connection.enabled = False
        _sync_social_app(connection, domains_of(connection))
        audit.record(
            "sso.disabled",
            actor=actor,
            ip=ip,
            tenant=tenant,
            target=connection,
            target_repr=f"Single sign-on ({connection.issuer})",
            before=before,
            after={"enabled": False, "by": "platform operator", "reason": reason.strip()[:300]},
        )
    return connection


def _sync_social_app(connection: SSOConnection, domains: list[str]) -> None:
    """Mirror the connection into allauth's SocialApp: there while enabled, gone when not."""
    from allauth.socialaccount.models import SocialApp

    apps = SocialApp.objects.filter(provider=PROVIDER, provider_id=connection.provider_id).order_by("pk")
    if not connection.enabled:
        apps.delete()
        return
    app = apps.first() or SocialApp(provider=PROVIDER, provider_id=connection.provider_id)
    apps.exclude(pk=app.pk).delete()
    app.name = f"{connection.tenant.name} single sign-on"[:40]
    app.client_id = connection.client_id
    app.secret = ""  # kept encrypted in SSOConnection; sso_provider hands it to the token call
    app.key = ""
    app.settings = {
        "server_url": connection.issuer.rstrip("/"),
        "oauth_pkce_enabled": True,
        "tenant_sso": True,
        # allauth marks an address verified only for these domains; linking by
        # email is the adapter's decision (admit), never allauth's.
        "verified_email": list(domains),
        "email_authentication": False,
    }
    app.save()


# --- signing in ---------------------------------------------------------------------------


def begin_sign_in(request: HttpRequest, connection: SSOConnection, *, email: str, next_url: str | None) -> HttpResponse:
    """Send the browser to the tenant's IdP (authorization request with PKCE and a nonce)."""
    from allauth.socialaccount.adapter import get_adapter
    from allauth.socialaccount.providers.base import AuthProcess

    provider = get_adapter(request).get_provider(request, connection.provider_id)
    auth_params = {**provider.get_auth_params(), "login_hint": email}
    return provider.redirect(request, AuthProcess.LOGIN, next_url=next_url, auth_params=auth_params)


def admit(connection: SSOConnection, *, email: str, email_verified, existing_user: User | None) -> None:
    """May the tenant's IdP sign this person in? Raises SSORefused with the reason if not.

    `existing_user` is the account the sign-in would use: the one already linked
    to this IdP subject, or the one with the same email that it would be linked to.
    """
    tenant = connection.tenant
    if not is_usable(connection):
        raise SSORefused(f"Single sign-on for {tenant.name} is switched off. Sign in with your password.")
    domain = email_domain(email)
    if not domain:
        raise SSORefused(f"{tenant.name}'s identity provider did not tell us your email address.")
    if domain not in trusted_domains_of(connection):
        if domain in domains_of(connection):
            raise SSORefused(
                f"{tenant.name} has not yet proved that {domain} is theirs (DNS verification), so its "
                "identity provider cannot sign in addresses there. Sign in with your password."
            )
        raise SSORefused(
            f"{tenant.name}'s single sign-on is for addresses at {', '.join(domains_of(connection))}; "
            f"it cannot sign in {email}."
        )
    if email_verified is False:
        raise SSORefused(f"{tenant.name}'s identity provider says {email} is not verified.")
    if existing_user is None:
        return
    if existing_user.is_staff or existing_user.is_superuser:
        raise SSORefused("Operator accounts cannot sign in through an organisation's single sign-on.")
    if not existing_user.is_active:
        raise SSORefused("This account is disabled.")


def accounts_with_email(email: str) -> list[User]:
    """Every account that proved it holds this address (a confirmed allauth address).

    Only a proof counts: the invitation link or a confirmation link reached the
    mailbox, or a tenant's IdP asserted it. Addresses are added on allauth's email
    page without any (ACCOUNT_EMAIL_VERIFICATION is "none"), so an unconfirmed one
    says nothing about whose it is and must not pick the account an IdP identity
    lands in.
    """
    from allauth.account.models import EmailAddress

    users: dict[int, User] = {}
    for address in EmailAddress.objects.filter(email__iexact=email, verified=True).select_related("user"):
        users.setdefault(address.user_id, address.user)
    return list(users.values())


def unproven_account_with_email(email: str) -> User | None:
    """An account whose own address this is, although it never proved it.

    Nobody may be linked to it, and no second account can be created with the
    same address either (User.email is unique): the sign-in is refused.
    """
    return User.objects.filter(email__iexact=email).first()


def drop_unproven_claims(email: str) -> int:
    """Remove the unconfirmed copies of `email` other accounts added on allauth's email page.

    Called once the tenant's IdP proved whose address it is: like a domain claim
    that another organisation proves, the unproven claim goes, so that nobody can
    block a newcomer's first sign-in by typing their address in.
    """
    from allauth.account.models import EmailAddress

    deleted, _ = EmailAddress.objects.filter(email__iexact=email, verified=False, primary=False).delete()
    if deleted:
        logger.info("SSO sign-in proved an address; %d unconfirmed copies on other accounts removed", deleted)
    return deleted


def may_link_existing_user(connection: SSOConnection, user: User) -> bool:
    """Link a first SSO sign-in to the account that proved it holds `email`?

    If the account belongs to no other organisation, yes: the verified domain claim
    vouches for its addresses. If it belongs to others too, the IdP would get the keys
    to data in tenants that never chose it, so only the person's own consent counts:
    they accepted this tenant's invitation while signed in to that account. An open
    invitation does not: the tenant writes those itself.
    """
    with user_context(user.pk):
        tenant_ids = set(Membership.of_user(user).values_list("tenant_id", flat=True))
    if tenant_ids <= {connection.tenant_id}:
        return True
    if connection.tenant_id not in tenant_ids:
        return False
    with tenant_context(connection.tenant, user_id=user.pk):
        return Invitation.objects.filter(accepted_by=user, status=InvitationStatus.ACCEPTED).exists()


def not_linked_message(connection: SSOConnection, email: str) -> str:
    """Why an account other organisations use was not linked, and what its holder can do."""
    name = connection.tenant.name
    first = (
        f"An account for {email} already exists and belongs to another organisation, so {name}'s "
        "single sign-on cannot take it over by itself."
    )
    if enforced_connection_for_email(email) is not None:
        return f"{first} Ask support to connect it to {name}'s single sign-on."
    return (
        f"{first} Sign in with your password and accept {name}'s invitation (ask an admin of {name} "
        "for one); after that you can sign in with single sign-on."
    )


def subject_fingerprint(connection: SSOConnection, subject: str) -> str:
    """A stand-in for an IdP subject in the tenant's audit log.

    The subject is half of an account link's key: shown to the tenant's admins it
    would tell them what to assert to sign in as someone. Keyed, so that it cannot be
    recomputed from a guess; stable, so that support can match it to a link.
    """
    key = hashlib.sha256(f"sso-subject:{settings.SECRET_KEY}".encode()).digest()
    message = f"{connection.provider_id}\x00{subject}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:16]


def record_account_linked(connection: SSOConnection, user: User, *, subject: str, ip: str | None = None) -> None:
    """Audit the first SSO sign-in into an account that already existed (it now answers to the IdP)."""
    with tenant_context(connection.tenant, user_id=user.pk):
        audit.record(
            "sso.account_linked",
            actor=user,
            tenant=connection.tenant,
            target=user,
            target_repr=user.email,
            after={
                "provider_id": connection.provider_id,
                "issuer": connection.issuer,
                "subject_fingerprint": subject_fingerprint(connection, subject),
            },
            ip=ip,
        )


# The issuer whose subject an account link (allauth SocialAccount) names, kept in its extra_data.
LINK_ISSUER = "tenant_sso_issuer"


def issuer_of_link(extra_data) -> str:
    """The issuer a link belongs to ("" if unknown). Links made before it was stored
    fall back to the issuer of the ID token their last sign-in kept."""
    if not isinstance(extra_data, dict):
        return ""
    issuer = extra_data.get(LINK_ISSUER)
    if issuer is None and isinstance(extra_data.get("id_token"), dict):
        issuer = extra_data["id_token"].get("iss")
    return issuer if isinstance(issuer, str) else ""


def stamp_link_issuer(connection: SSOConnection, *, subject: str, extra_data: dict) -> None:
    """Put the issuer of the account link this sign-in uses into its extra_data.

    allauth replaces a link's extra_data with each sign-in's before any check runs, so
    an existing link's own issuer is carried over here (the check in the adapter then
    compares it with the connection's); a new link gets the connection's.
    """
    from allauth.socialaccount.models import SocialAccount

    stored = (
        SocialAccount.objects.filter(provider=connection.provider_id, uid=subject)
        .values_list("extra_data", flat=True)
        .first()
    )
    extra_data[LINK_ISSUER] = connection.issuer if stored is None else issuer_of_link(stored)


def check_link_issuer(connection: SSOConnection, extra_data) -> None:
    """Refuse a sign-in through an account link another IdP made (defence in depth:
    changing the issuer removes the links, `_forget_the_old_provider`)."""
    if not same_issuer(issuer_of_link(extra_data), connection.issuer):
        raise SSORefused(
            f"Your account was linked to another identity provider than the one {connection.tenant.name} "
            "uses now, so single sign-on cannot sign you in to it. Sign in with your password, or ask support."
        )


def _open_invitation(email: str) -> Invitation | None:
    return (
        Invitation.objects.filter(email__iexact=email, status=InvitationStatus.PENDING, expires_at__gt=timezone.now())
        .order_by("-created_at")
        .first()
    )


def provision_membership(connection: SSOConnection, user: User, *, email: str, ip: str | None = None) -> Membership:
    """Just-in-time: make the person a member of the connection's tenant if they are not yet.

    An open invitation for `email`, the address the IdP asserted (and admit()
    trusted), is accepted (its role wins); otherwise they join with the
    connection's default role. Never the account's own address: the IdP vouches
    for the one it asserted, not for whatever the account calls itself. Idempotent.
    """
    tenant = connection.tenant
    with tenant_context(tenant, user_id=user.pk):
        membership = Membership.objects.filter(user=user).first()
        if membership is not None:
            return membership
        try:
            with transaction.atomic():
                invitation = _open_invitation(email)
                role = invitation.role if invitation is not None else connection.default_role
                if role == Role.OWNER and invitation is None:
                    role = Role.MEMBER  # belt and braces: the model's check constraint says the same
                membership = Membership.objects.create(user=user, role=role)
                if invitation is not None:
                    Invitation.objects.filter(pk=invitation.pk, status=InvitationStatus.PENDING).update(
                        status=InvitationStatus.ACCEPTED, accepted_by=user, accepted_at=timezone.now()
                    )
                audit.record(
                    "membership.created",
                    actor=user,
                    tenant=tenant,
                    target=membership,
                    target_repr=user.email,
                    after={
                        "role": role,
                        "via": "sso",
                        "provider_id": connection.provider_id,
                        **({"invitation": invitation.pk} if invitation is not None else {}),
                    },
                    ip=ip,
                )
        except IntegrityError:
            # A second sign-in in another tab created it meanwhile.
            membership = Membership.objects.get(user=user)
        return membership
