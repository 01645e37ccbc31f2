"""The one place that answers "may this user do this to that?".

Views, link issuers, API endpoints and job submissions call these functions;
none re-implements a rule. Each answer carries a message that tells the user
what happened and what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from datasets_app.models import EVERY_CONFIG, AccessRequest, Grant, Resource


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str
    message: str = ""
    action_url: str = ""
    grant: Grant | None = None
    config: str = ""  # the config refused, for config_not_covered

    def __bool__(self) -> bool:
        return self.allowed


def _day(value) -> str:
    return date_format(timezone.localtime(value), "j F Y")


def sentence(text: str) -> str:
    """A reviewer's free text as a sentence ending in a full stop, so the next sentence does not run on."""
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def restricted_configs(resource: Resource) -> dict[str, str]:
    """{config name: its stricter conditions} for the resource's restricted configs."""
    return dict(resource.restricted_configs.values_list("name", "conditions"))


def config_names(files: QuerySet) -> list[str]:
    """The configs `files` belong to, sorted: not "" (files of no config) nor EVERY_CONFIG (the manifest)."""
    return sorted(set(files.exclude(config__in=["", EVERY_CONFIG]).values_list("config", flat=True)))


def grant_covers(grant: Grant | None, config: str, restricted) -> bool:
    """Whether a grant reaches a file of `config` ("" for files of no config, such as the card).
    Without a grant (open and registered resources), everything is reachable.

    A file of EVERY_CONFIG (a version's manifest.json, which lists every config's files and
    counts) needs a grant of every config: every unrestricted one and each restricted one by
    name. The download_events statement applies the same rule.
    """
    if grant is None or not config or config in grant.configs:
        return True
    if not grant.all_configs:
        return False
    if config == EVERY_CONFIG:
        return all(name in grant.configs for name in restricted)
    return config not in restricted


def can_download(user, resource: Resource, config: str | None = None) -> Decision:
    """May `user` download from `resource` (from its `config`, when given)?"""
    decision = _can_download(user, resource)
    if decision and config and decision.grant is not None:
        restricted = restricted_configs(resource)
        if not grant_covers(decision.grant, config, restricted):
            if config == EVERY_CONFIG:
                return _every_config_refused(resource, decision.grant)
            why = f" It has stricter conditions: {restricted[config]}" if config in restricted else ""
            return Decision(
                False, "config_not_covered",
                f"Your access to {resource.repo_id} does not cover the {config} config.{why} "
                "Request access to it (your current access stays valid until the new request is decided).",
                reverse("access_request", kwargs={"namespace": resource.namespace, "slug": resource.slug}), decision.grant,
                config=config,
            )
    return decision


def _every_config_refused(resource: Resource, grant: Grant) -> Decision:
    return Decision(
        False, "manifest_not_covered",
        f"This is the manifest.json of every config of {resource.repo_id}, and your access covers only some of "
        "them. Download the manifest of the configs your access covers instead: it is listed on the version's "
        "download page and in its urls.txt and SHA256SUMS, under the same name. To get this one, request access "
        "to every config.",
        reverse("access_request", kwargs={"namespace": resource.namespace, "slug": resource.slug}), grant,
    )


def _can_download(user, resource: Resource) -> Decision:
    policy = resource.access_policy
    if policy == Resource.Policy.OPEN:
        return Decision(True, "open")
    if not user.is_authenticated:
        return Decision(
            False, "login_required",
            f"Sign in to download {resource.repo_id}.", reverse("account_login"),
        )
    if policy == Resource.Policy.REGISTERED:
        return Decision(True, "registered")

    now = timezone.now()
    # At most one active grant exists (a database constraint), so no ordering is needed:
    # [:1] rather than first() spares compiling an ORDER BY on every download request.
    grant = next(iter(
        Grant.objects.filter(user=user, resource=resource, status=Grant.Status.ACTIVE)
        .select_related("license_version__license").defer("license_version__text")[:1]
    ), None)
    if grant is not None and grant.expires_at > now:
        # Compared here rather than with grant.needs_reacceptance, which would load the resource again.
        if resource.license_version_id is not None and resource.license_version_id != grant.license_version_id:
            current = resource.license_version
            return Decision(
                False, "license_changed",
                f"The license of {resource.repo_id} changed to version {current.version}. "
                "Accept it to keep downloading.",
                reverse("grant_reaccept", kwargs={"pk": grant.pk}), grant,
            )
        return Decision(True, "granted", grant=grant)

    request_url = reverse("access_request", kwargs={"namespace": resource.namespace, "slug": resource.slug})
    # An open request is the next step, even after an expiry or a revocation: telling
    # someone who already re-applied to "apply again" sends them in a circle.
    pending = AccessRequest.objects.filter(user=user, resource=resource, status__in=AccessRequest.OPEN_STATUSES).first()
    if pending is not None and pending.status == AccessRequest.Status.CHANGES_REQUESTED:
        return Decision(
            False, "changes_requested",
            f"The reviewers asked for changes to your request for {resource.repo_id}: {pending.decision_reason}",
            request_url,
        )
    if pending is not None:
        return Decision(
            False, "pending",
            f"Your request for {resource.repo_id} is waiting for review. You will get an e-mail when it is decided.",
            reverse("my_access"),
        )
    latest = grant or Grant.objects.filter(user=user, resource=resource).order_by("-created_at").first()
    if latest is not None and (latest.status == Grant.Status.EXPIRED or (latest.status == Grant.Status.ACTIVE and latest.expires_at <= now)):
        return Decision(
            False, "expired",
            f"Your access to {resource.repo_id} expired on {_day(latest.expires_at)}. Request renewal below.",
            request_url, latest,
        )
    if latest is not None and latest.status == Grant.Status.REVOKED:
        reason = f" Reason: {sentence(latest.end_reason)}" if latest.end_reason else ""
        return Decision(
            False, "revoked",
            f"Your access to {resource.repo_id} was revoked on {_day(latest.ended_at)}.{reason} "
            "You may apply again if the situation has changed.",
            request_url, latest,
        )
    rejected = AccessRequest.objects.filter(user=user, resource=resource).order_by("-submitted_at").first()
    if rejected is not None and rejected.status == AccessRequest.Status.REJECTED:
        return Decision(
            False, "rejected",
            f"Your request for {resource.repo_id} was not approved: {sentence(rejected.decision_reason)} "
            "You may apply again if you can address this.",
            request_url,
        )
    return Decision(
        False, "request_required",
        f"{resource.repo_id} is gated: read its license and request access.", request_url,
    )


def downloadable_resources(user, queryset: QuerySet[Resource] | None = None) -> QuerySet[Resource]:
    """The queryset twin of can_download: the resources it would allow."""
    queryset = Resource.objects.all() if queryset is None else queryset
    if not user.is_authenticated:
        return queryset.filter(access_policy=Resource.Policy.OPEN)
    current_grant = Grant.objects.filter(
        user=user, resource=OuterRef("pk"), status=Grant.Status.ACTIVE, expires_at__gt=timezone.now(),
    ).filter(Q(license_version=OuterRef("license_version")) | Q(resource__license_version__isnull=True))
    return queryset.filter(
        Q(access_policy__in=[Resource.Policy.OPEN, Resource.Policy.REGISTERED]) | Exists(current_grant)
    )


@dataclass(frozen=True)
class CommandLineOperator:
    """Someone running a management command on the server (grant_access, revoke_access).

    They hold the database and the settings, so no page could stop them: they may decide on
    every resource, unless they name a portal account with --actor, whose authority (and name
    in the trail) is then theirs. Only commands build one; pages, the admin and the API pass
    request.user, so a caller cannot reach a decision without an actor by passing None.
    """

    name: str  # the --actor username, or else the system user running the command
    user: object | None = None  # the portal account named with --actor

    def trail(self) -> dict[str, str]:
        """What the audit event records of who acted, and from where."""
        return {"via": "command line", "operator": self.name}


def acting_user(actor):
    """The portal account to record as having decided (granted_by, decided_by): None for an
    operator who named no account."""
    return actor.user if isinstance(actor, CommandLineOperator) else actor


def actor_trail(actor) -> dict[str, str]:
    """What an audit event's data adds about who decided from outside the web pages."""
    return actor.trail() if isinstance(actor, CommandLineOperator) else {}


def reviewable_resources(user) -> QuerySet[Resource]:
    """Reviewers are assigned per resource; being staff is not enough."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Resource.objects.none()
    if user.is_superuser:
        return Resource.objects.all()
    return Resource.objects.filter(reviewers=user)


def can_review(actor, resource: Resource) -> bool:
    """May `actor` decide on `resource`: its requests, grants and takedowns? A reviewer assigned to
    it, a superuser, or an operator at the command line (with --actor, only as that account may)."""
    if isinstance(actor, CommandLineOperator):
        return actor.user is None or can_review(actor.user, resource)
    return reviewable_resources(actor).filter(pk=resource.pk).exists()


def can_request_access(user, resource: Resource) -> Decision:
    if not resource.is_gated:
        return Decision(False, "not_gated", f"{resource.repo_id} needs no request.", resource.get_absolute_url())
    if not user.is_authenticated:
        return Decision(False, "login_required", "Sign in to request access.", reverse("account_login"))
    if resource.license_version_id is None:
        return Decision(
            False, "no_license",
            f"{resource.repo_id} has no published license yet, so requests are closed. Please check back later.",
            resource.get_absolute_url(),
        )
    return Decision(True, "ok")


def can_change_governance(actor, permission: str) -> bool:
    """May `actor` change a resource's rules (policy, license, reviewers, questions, restricted configs,
    exclusions)? An active staff account holding the Django model permission for that change, e.g.
    "datasets_app.change_resource" (superusers hold them all). Reviewers decide on a resource's requests
    but do not rewrite its rules: that would let a committee member widen their own resource."""
    if actor is None or not getattr(actor, "is_authenticated", False) or not actor.is_active or not actor.is_staff:
        return False
    return actor.has_perm(permission)
