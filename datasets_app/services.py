"""Writes of the governance workflow: requests, review, grants, licenses.

Every function here is keyword-only, runs in one transaction, records an audit
event with the change, and queues its e-mails to be sent after commit.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from datasets_app import notifications
from datasets_app.authz import (
    CommandLineOperator, acting_user, actor_trail, can_change_governance, can_request_access, can_review, config_names,
    restricted_configs,
)
from datasets_app.models import AccessRequest, File, Grant, License, LicenseVersion, Resource
from datasets_app.signals import grant_ended
from portal.audit import audit_record
from portal.client import client_ip

User = get_user_model()


class GovernanceError(Exception):
    """A refused action; its message is shown to the person who tried it, beside the form field
    named by `field` where one is to blame (None: the form as a whole)."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def end_of_day(day: date) -> datetime:
    """When access granted until `day` ends: its last second, in the portal's time zone (a reviewer's
    form and grant_access both take a date)."""
    return timezone.make_aware(datetime.combine(day, time(23, 59, 59)))


def _require_reviewer(actor, resource: Resource, *, to: str) -> None:
    """Refuse an actor who may not decide on `resource` (datasets_app.authz.can_review), whoever
    called: a page, the admin, a command, a task or the API."""
    if can_review(actor, resource):
        return
    if isinstance(actor, CommandLineOperator):
        raise GovernanceError(f"{actor.name} does not review {resource.repo_id}, so may not {to}: name a reviewer of it "
                              "or an administrator with --actor, or leave --actor out to act as the operator.")
    raise GovernanceError(f"Only a reviewer of {resource.repo_id} may {to}: ask an administrator to assign you to it.")


def _require_governance(actor, permission: str, *, to: str, operator: bool = False) -> None:
    """Refuse an actor who may not change the rules (datasets_app.authz.can_change_governance: active
    staff holding `permission`), whoever called. resource_settings shares it for every rule it writes,
    publishing and builds for theirs.

    With `operator` (a change a management command makes: publish_version, build_dataset), an operator
    at the command line may make it, as the account named with --actor where one is, since whoever
    runs commands on the server holds the machine anyway; everywhere else no command exists for it."""
    if isinstance(actor, CommandLineOperator) and operator:
        if actor.user is None or can_change_governance(actor.user, permission):
            return
        raise GovernanceError(f"{actor.name} does not hold the permission {permission}, so may not {to}: name an "
                              "account holding it with --actor, or leave --actor out to act as the operator.")
    if can_change_governance(actor, permission):
        return
    raise GovernanceError(f"Only staff with the permission {permission} may {to}: ask an administrator to give it to you.")


def _normalise_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def _verified_institutional_domain(user) -> str | None:
    from allauth.account.models import EmailAddress

    email = getattr(getattr(user, "profile", None), "institutional_email", "")
    if not email or not EmailAddress.objects.filter(user=user, email__iexact=email, verified=True).exists():
        return None
    return email.rsplit("@", 1)[-1].lower()


def resource_configs(resource: Resource) -> list[str]:
    """The configs of the resource's published versions, sorted."""
    return config_names(File.objects.filter(version__resource=resource, version__published_at__isnull=False))


def _grant_summary(grant: Grant) -> dict[str, Any]:
    return {
        "grant_id": grant.pk,
        "all_configs": grant.all_configs,
        "configs": grant.configs,
        "user": grant.user.get_username(),
        "expires_at": grant.expires_at,
        "license_version": str(grant.license_version) if grant.license_version else None,
        "license_sha256": grant.license_version.sha256 if grant.license_version else None,
    }


# --- Licenses ------------------------------------------------------------------------


@transaction.atomic
def license_version_publish(
    *, license: License, version: str, text: str, actor, resources: list[Resource] | None = None
) -> LicenseVersion:
    """Publish a new license text and make it current for `resources`.

    Without `resources`, every resource currently on an earlier version of this
    license moves to the new one. Holders of grants on those resources must
    re-accept before their next download, and are told so by e-mail. No command publishes
    licenses, so an operator at the command line is refused like any account without the right.
    """
    _require_governance(actor, "datasets_app.add_licenseversion", to=f"publish a new version of {license.title}")
    text = text.strip()
    if not text:
        raise GovernanceError("The license text is empty: paste the full text of the new version.")
    if LicenseVersion.objects.filter(license=license, version=version).exists():
        raise GovernanceError(f"{license.title} already has a version {version}: choose a new version number.")
    new = LicenseVersion.objects.create(license=license, version=version, text=text, sha256=LicenseVersion.digest(text))
    targets = resources if resources is not None else list(Resource.objects.filter(license_version__license=license))
    for resource in targets:
        resource.license_version = new
        resource.save(update_fields=["license_version"])
        audit_record(
            action="license_published", actor=actor, target=new, resource=resource.repo_id,
            data={"version": version, "sha256": new.sha256},
        )
        license_holders_notify(resource=resource, license_version=new)
    if not targets:
        audit_record(action="license_published", actor=actor, target=new, data={"version": version, "sha256": new.sha256})
    return new


def license_holders_notify(*, resource: Resource, license_version: LicenseVersion) -> int:
    """E-mail every active holder of `resource` who accepted another license version than
    `license_version` (now the resource's current one) a link to re-accept it. Their downloads
    pause until they do (authz.can_download compares the grant's version with the resource's).
    Both ways of changing a resource's license call it: publishing a new version of its license
    (license_version_publish) and moving the resource to another version
    (resource_settings.resource_license_set). Returns how many holders were told."""
    holders = (Grant.objects.filter(resource=resource, status=Grant.Status.ACTIVE)
               .exclude(license_version=license_version).select_related("user"))
    told = 0
    for grant in holders:
        grant.resource = resource  # the caller's copy, already on the new version
        notifications.license_changed(grant=grant)
        told += 1
    return told


# --- Access requests ---------------------------------------------------------------------


def access_request_submit(
    *, user, resource: Resource, intended_use: str, answers: list[dict[str, Any]], signature: str, request=None,
    all_configs: bool = True, configs: list[str] | None = None,
) -> tuple[AccessRequest, bool]:
    """Submit (or resubmit after changes were asked) a request. Returns (request, created).

    A second submission while one is pending returns the pending one unchanged.
    """
    decision = can_request_access(user, resource)
    if not decision:
        raise GovernanceError(decision.message)
    full_name = getattr(user.profile, "full_name", "")
    if not full_name:
        raise GovernanceError("Fill in your full name on your profile before requesting access.")
    if _normalise_name(signature) != _normalise_name(full_name):
        raise GovernanceError(f"Sign with your full name exactly as on your profile: {full_name}.", field="signature")
    if not intended_use.strip():
        raise GovernanceError("Describe your intended use of the data.")

    configs = sorted(set(configs or []))
    if not all_configs and not configs:
        raise GovernanceError("Choose the configs (languages) you need, or ask for all of them.")
    restricted = restricted_configs(resource)
    unknown = sorted(set(configs) - set(restricted) - set(resource_configs(resource)))
    if unknown:
        raise GovernanceError(f"{resource.repo_id} has no config {unknown[0]!r}: choose from the list on the request form.")
    license_version = resource.license_version
    fields = {
        "all_configs": all_configs,
        "configs": configs,
        "intended_use": intended_use.strip(),
        "answers": answers,
        "signature": signature.strip(),
        "license_version": license_version,
        "license_sha256": license_version.sha256,
        "submitted_at": timezone.now(),
        "ip": client_ip(request),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:400] if request else "",
    }
    try:
        with transaction.atomic():
            existing = (
                AccessRequest.objects.select_for_update()
                .filter(user=user, resource=resource, status__in=AccessRequest.OPEN_STATUSES)
                .first()
            )
            if existing is not None and existing.status == AccessRequest.Status.PENDING:
                return existing, False
            if existing is not None:
                for name, value in fields.items():
                    setattr(existing, name, value)
                existing.status = AccessRequest.Status.PENDING
                # The change request stays in the audit trail; the row describes the new submission.
                existing.decided_by, existing.decided_at, existing.decision_reason = None, None, ""
                existing.save()
                access_request, action = existing, "request_resubmitted"
            else:
                access_request = AccessRequest.objects.create(user=user, resource=resource, **fields)
                action = "request_submitted"
            audit_record(
                action=action, actor=user, target=access_request, resource=resource.repo_id, request=request,
                data={"license_version": str(license_version), "license_sha256": license_version.sha256, "answers": answers, "intended_use": fields["intended_use"],
                      "all_configs": all_configs, "configs": configs},
            )
            audit_record(
                action="license_accepted", actor=user, target=license_version, resource=resource.repo_id, request=request,
                data={"version": license_version.version, "sha256": license_version.sha256, "signature": fields["signature"]},
            )
            # A restricted config needs its own approval: never automatic.
            auto_reason = "" if set(configs) & set(restricted) else _auto_approval_reason(user, resource)
            if auto_reason:
                _approve(
                    access_request=access_request, reviewer=None, automatic=True,
                    expires_at=timezone.now() + timedelta(days=resource.default_grant_days), note=auto_reason,
                )
                access_request.refresh_from_db()
            else:
                notifications.request_submitted(access_request=access_request)
    except IntegrityError:
        # A concurrent submission won the race for the one open request.
        existing = AccessRequest.objects.filter(user=user, resource=resource, status__in=AccessRequest.OPEN_STATUSES).first()
        if existing is None:
            raise
        return existing, False
    return access_request, True


def _auto_approval_reason(user, resource: Resource) -> str:
    if resource.access_policy == Resource.Policy.GATED_AUTO:
        return "Approved automatically: this resource approves every complete request."
    domains = resource.auto_approve_domain_list()
    if domains:
        domain = _verified_institutional_domain(user)
        if domain and any(domain == d or domain.endswith("." + d) for d in domains):
            return f"Approved automatically: verified institutional e-mail at {domain}."
    return ""


def _claim(access_request: AccessRequest, *, status: str, reviewer, reason: str, automatic: bool = False) -> None:
    """Decide a request exactly once: a second reviewer acting at the same time loses."""
    claimed = AccessRequest.objects.filter(pk=access_request.pk, status__in=AccessRequest.OPEN_STATUSES).update(
        status=status, decided_by=acting_user(reviewer), decided_at=timezone.now(), decision_reason=reason,
        auto_approved=automatic,
    )
    if claimed != 1:
        access_request.refresh_from_db()
        raise GovernanceError(
            f"This request was already decided ({access_request.get_status_display().lower()}) "
            f"by {access_request.decided_by or 'the system'}; reload the queue."
        )
    access_request.refresh_from_db()


def _known_configs(resource: Resource, configs: list[str], *, all_configs: bool) -> list[str]:
    configs = sorted(set(configs))
    if not all_configs and not configs:
        raise GovernanceError("Name the configs the grant covers, or grant every config.")
    known = set(restricted_configs(resource)) | set(resource_configs(resource))
    unknown = [c for c in configs if c not in known]
    if unknown:
        choices = ", ".join(sorted(known)) or "none yet (no published version)"
        raise GovernanceError(f"{resource.repo_id} has no config {unknown[0]!r}; its configs are: {choices}.")
    return configs


def requested_configs(access_request: AccessRequest) -> list[str]:
    """The configs a request asks for, by name: those it names, and with `all_configs` every
    unrestricted config of the resource's published versions."""
    named = set(access_request.configs)
    if access_request.all_configs:
        restricted = restricted_configs(access_request.resource)
        named |= {c for c in resource_configs(access_request.resource) if c not in restricted}
    return sorted(named)


def _narrowed(access_request: AccessRequest, configs: list[str]) -> list[str]:
    configs = sorted(set(configs))
    if not configs:
        raise GovernanceError("Choose at least one config to approve, or approve the request as asked.")
    outside = [c for c in configs if c not in requested_configs(access_request)]
    if outside:
        raise GovernanceError(f"The request does not ask for the {outside[0]} config: approve only configs it asks for "
                              "(the applicant can request the others).")
    return configs


@transaction.atomic
def access_request_approve(*, access_request: AccessRequest, reviewer, expires_at: datetime, note: str = "",
                           configs: list[str] | None = None) -> Grant:
    """Approve as asked, or with `configs` only those configs of the ones asked for; the request
    keeps what was asked, the grant what was approved. Only a reviewer of the resource approves:
    the automatic approval of access_request_submit goes through _approve, never through here."""
    _require_reviewer(reviewer, access_request.resource, to="approve its access requests")
    return _approve(access_request=access_request, reviewer=reviewer, expires_at=expires_at, note=note, configs=configs)


def _approve(*, access_request: AccessRequest, reviewer, expires_at: datetime, note: str,
             configs: list[str] | None = None, automatic: bool = False) -> Grant:
    if expires_at <= timezone.now():
        raise GovernanceError("The expiry date must be in the future.")
    narrowed = _narrowed(access_request, configs) if configs is not None else None
    _claim(access_request, status=AccessRequest.Status.APPROVED, reviewer=reviewer, reason=note, automatic=automatic)
    grant = _grant_open(
        user=access_request.user, resource=access_request.resource, granted_by=acting_user(reviewer), expires_at=expires_at,
        license_version=access_request.license_version, access_request=access_request, reason=note, configs=narrowed,
    )
    scope = {"narrowed_from": {"all_configs": access_request.all_configs, "configs": access_request.configs}} if narrowed is not None else {}
    audit_record(
        action="request_approved", actor=acting_user(reviewer), target=access_request, resource=access_request.resource.repo_id,
        data={**_grant_summary(grant), **scope, "note": note, "automatic": automatic, **actor_trail(reviewer)},
    )
    notifications.request_decided(access_request=access_request, grant=grant)
    return grant


@transaction.atomic
def access_request_reject(*, access_request: AccessRequest, reviewer, reason: str) -> AccessRequest:
    _require_reviewer(reviewer, access_request.resource, to="reject its access requests")
    if not reason.strip():
        raise GovernanceError("Give a reason for the rejection: the applicant will read it.")
    _claim(access_request, status=AccessRequest.Status.REJECTED, reviewer=reviewer, reason=reason.strip())
    audit_record(
        action="request_rejected", actor=acting_user(reviewer), target=access_request, resource=access_request.resource.repo_id,
        data={"user": access_request.user.get_username(), "reason": reason.strip(), **actor_trail(reviewer)},
    )
    notifications.request_decided(access_request=access_request, grant=None)
    return access_request


@transaction.atomic
def access_request_request_changes(*, access_request: AccessRequest, reviewer, message: str) -> AccessRequest:
    _require_reviewer(reviewer, access_request.resource, to="ask for changes to its access requests")
    if not message.strip():
        raise GovernanceError("Say what the applicant should change.")
    if access_request.status != AccessRequest.Status.PENDING:
        raise GovernanceError("Changes can only be asked of a pending request.")
    updated = AccessRequest.objects.filter(pk=access_request.pk, status=AccessRequest.Status.PENDING).update(
        status=AccessRequest.Status.CHANGES_REQUESTED, decided_by=acting_user(reviewer), decided_at=timezone.now(),
        decision_reason=message.strip(),
    )
    if updated != 1:
        raise GovernanceError("This request was decided meanwhile; reload the queue.")
    access_request.refresh_from_db()
    audit_record(
        action="request_changes_requested", actor=acting_user(reviewer), target=access_request,
        resource=access_request.resource.repo_id,
        data={"user": access_request.user.get_username(), "message": message.strip(), **actor_trail(reviewer)},
    )
    notifications.request_decided(access_request=access_request, grant=None)
    return access_request


# --- Grants ----------------------------------------------------------------------------------


def _grant_open(
    *, user, resource: Resource, granted_by, expires_at: datetime, license_version: LicenseVersion | None,
    access_request: AccessRequest | None = None, reason: str = "", configs: list[str] | None = None,
    all_configs: bool = False,
) -> Grant:
    now = timezone.now()
    # A renewal replaces the current grant; the database allows one active grant.
    previous = Grant.objects.select_for_update().filter(user=user, resource=resource, status=Grant.Status.ACTIVE).first()
    if previous is not None:
        previous.status = Grant.Status.SUPERSEDED
        previous.ended_at = now
        previous.ended_by = granted_by
        previous.end_reason = "Renewed"
        previous.save(update_fields=["status", "ended_at", "ended_by", "end_reason"])
    # The scope asked for is the scope granted unless a reviewer narrowed it to `configs` (or an
    # operator chose `configs`, with `all_configs`); without a request, all unrestricted configs.
    if configs is not None:
        scope = {"all_configs": all_configs, "configs": configs}
    elif access_request is not None:
        scope = {"all_configs": access_request.all_configs, "configs": access_request.configs}
    else:
        scope = {"all_configs": True, "configs": []}
    return Grant.objects.create(
        user=user, resource=resource, request=access_request, license_version=license_version,
        license_accepted_at=access_request.submitted_at if access_request else now,
        granted_by=granted_by, reason=reason, created_at=now, expires_at=expires_at, **scope,
    )


@transaction.atomic
def grant_create(*, user, resource: Resource, granted_by, expires_at: datetime | None, reason: str,
                 configs: list[str] | None = None, all_configs: bool = False) -> Grant:
    """A grant without an application (scripted or class-wide grants by operators).

    With `configs`, it covers those configs (and, with `all_configs`, every unrestricted one too).
    Without, it covers what the user's latest grant on the resource covered, so that renewing a
    grant of some configs never widens it to all of them; a first grant covers every unrestricted config.
    """
    _require_reviewer(granted_by, resource, to="grant access to it")
    expires_at = expires_at or timezone.now() + timedelta(days=resource.default_grant_days)
    if expires_at <= timezone.now():
        raise GovernanceError("The expiry date must be in the future.")
    if not resource.is_gated:
        raise GovernanceError(f"{resource.repo_id} is not gated ({resource.get_access_policy_display().lower()}); it needs no grant.")
    kept_from = None
    if configs is not None:
        configs = _known_configs(resource, configs, all_configs=all_configs)
    elif all_configs:
        configs = []
    else:
        kept_from = Grant.objects.filter(user=user, resource=resource).order_by("-created_at", "-pk").first()
        if kept_from is not None:
            configs, all_configs = kept_from.configs, kept_from.all_configs
    grant = _grant_open(
        user=user, resource=resource, granted_by=acting_user(granted_by), expires_at=expires_at,
        license_version=resource.license_version, reason=reason, configs=configs, all_configs=all_configs,
    )
    kept = {"configs_kept_from_grant": kept_from.pk} if kept_from is not None else {}
    audit_record(
        action="grant_created", actor=acting_user(granted_by), target=grant, resource=resource.repo_id,
        data={**_grant_summary(grant), "reason": reason, **kept, **actor_trail(granted_by)},
    )
    notifications.grant_created(grant=grant)
    return grant


@transaction.atomic
def grant_revoke(*, grant: Grant, revoked_by, reason: str) -> Grant:
    _require_reviewer(revoked_by, grant.resource, to="revoke its grants")
    if not reason.strip():
        raise GovernanceError("Give a reason for revoking: the holder will read it.")
    updated = Grant.objects.filter(pk=grant.pk, status=Grant.Status.ACTIVE).update(
        status=Grant.Status.REVOKED, ended_at=timezone.now(), ended_by=acting_user(revoked_by), end_reason=reason.strip()
    )
    if updated != 1:
        grant.refresh_from_db()
        raise GovernanceError(f"This grant is no longer active ({grant.get_status_display().lower()}).")
    grant.refresh_from_db()
    audit_record(
        action="grant_revoked", actor=acting_user(revoked_by), target=grant, resource=grant.resource.repo_id,
        data={"user": grant.user.get_username(), "reason": reason.strip(), **actor_trail(revoked_by)},
    )
    grant_ended.send(sender=Grant, grant=grant, reason="revoked")
    notifications.grant_revoked(grant=grant)
    return grant


@transaction.atomic
def grant_reaccept(*, grant: Grant, user, request=None) -> Grant:
    if grant.user_id != user.pk:
        raise GovernanceError("This grant belongs to someone else.")
    if not grant.is_current:
        raise GovernanceError("This grant is no longer active: request access again.")
    # Read the current license from the database: the caller's resource may be stale.
    current = Resource.objects.select_related("license_version").get(pk=grant.resource_id).license_version
    if current is None or current.pk == grant.license_version_id:
        return grant
    grant.license_version = current
    grant.license_accepted_at = timezone.now()
    grant.save(update_fields=["license_version", "license_accepted_at"])
    audit_record(
        action="license_accepted", actor=user, target=current, resource=grant.resource.repo_id, request=request,
        data={"version": current.version, "sha256": current.sha256, "grant_id": grant.pk},
    )
    return grant


def grants_expire_due(*, now: datetime | None = None) -> int:
    """Mark active grants past their expiry as expired. Safe to run concurrently."""
    now = now or timezone.now()
    expired = 0
    for grant_id in Grant.objects.filter(status=Grant.Status.ACTIVE, expires_at__lte=now).values_list("pk", flat=True):
        with transaction.atomic():
            if Grant.objects.filter(pk=grant_id, status=Grant.Status.ACTIVE).update(status=Grant.Status.EXPIRED, ended_at=now) != 1:
                continue
            grant = Grant.objects.select_related("user", "resource").get(pk=grant_id)
            audit_record(action="grant_expired", target=grant, resource=grant.resource.repo_id, data=_grant_summary(grant))
            grant_ended.send(sender=Grant, grant=grant, reason="expired")
            expired += 1
    return expired


def grants_send_reminders(*, now: datetime | None = None, days: int = 14) -> int:
    """E-mail holders whose grant ends within `days`; each grant is reminded once."""
    now = now or timezone.now()
    due = Grant.objects.filter(
        status=Grant.Status.ACTIVE, reminder_sent_at__isnull=True, expires_at__gt=now, expires_at__lte=now + timedelta(days=days)
    ).values_list("pk", flat=True)
    sent = 0
    for grant_id in due:
        with transaction.atomic():
            if Grant.objects.filter(pk=grant_id, reminder_sent_at__isnull=True).update(reminder_sent_at=now) != 1:
                continue
            grant = Grant.objects.select_related("user", "resource").get(pk=grant_id)
            notifications.grant_expiring(grant=grant)
            audit_record(action="grant_reminder_sent", target=grant, resource=grant.resource.repo_id, data=_grant_summary(grant))
            sent += 1
    return sent
