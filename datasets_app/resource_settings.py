"""Writes of a resource's rules: its settings and policy, reviewers, license, access questions,
restricted configs and exclusions (the takedown list); the licenses themselves (their title and
slug); and what the admin may still change of a version (its changelog, or the version itself
while it is unpublished).

Every function here is keyword-only, runs in one transaction, refuses an actor without the
authority to make the change (datasets_app.authz.can_change_governance: active staff holding the
Django permission of that change; superusers hold them all; a reviewer of the resource does not
rewrite its rules), and records an audit event with what changed, before and after. The admin calls
them from its save and delete hooks, so an edit there leaves the same trail as any other change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from datasets_app.models import (
    EVERY_CONFIG, AccessQuestion, Build, Exclusion, Grant, License, LicenseVersion, Resource, RestrictedConfig, Version,
)
from datasets_app.services import GovernanceError, license_holders_notify
from datasets_app.services import _require_governance as _require  # one wording of the refusal, with license_version_publish
from portal.audit import audit_record

# What resource_update may change. The license and the reviewers have their own functions: a new
# license asks holders to re-accept, and reviewers are a many-to-many set.
RESOURCE_FIELDS = ("namespace", "slug", "kind", "title", "summary", "description", "access_policy",
                   "auto_approve_domains", "default_grant_days")
QUESTION_FIELDS = ("label", "help_text", "kind", "choices", "required", "position")
# A license's text lives in its versions, which are published (services.license_version_publish), never edited.
LICENSE_FIELDS = ("slug", "title")


def _apply(obj, values: dict[str, Any], fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Set `values` on `obj`; return {field: {"before", "after"}} of those that differ."""
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise GovernanceError(f"{unknown[0]} is not one of the fields this change may set ({', '.join(fields)}).")
    changes = {}
    for name, value in values.items():
        before = getattr(obj, name)
        if before != value:
            changes[name] = {"before": before, "after": value}
            setattr(obj, name, value)
    return changes


def _valid(obj) -> None:
    """The model's own rules (slugs, lengths, choices, constraints), said as a refusal."""
    try:
        obj.full_clean()
    except ValidationError as error:
        raise GovernanceError(" ".join(error.messages)) from None


def _license(license_version: LicenseVersion | None) -> dict[str, str] | None:
    if license_version is None:
        return None
    return {"license_version": str(license_version), "sha256": license_version.sha256}


# --- The resource --------------------------------------------------------------------------------


@transaction.atomic
def resource_create(*, actor, values: dict[str, Any], license_version: LicenseVersion | None = None) -> Resource:
    """A new resource with `values` (RESOURCE_FIELDS) and its first license; nobody holds it yet."""
    _require(actor, "datasets_app.add_resource", to="add a resource")
    resource = Resource(license_version=license_version)
    _apply(resource, values, RESOURCE_FIELDS)
    _valid(resource)
    resource.save()
    audit_record(action="resource_created", actor=actor, target=resource, resource=resource.repo_id,
                 data={**{name: getattr(resource, name) for name in RESOURCE_FIELDS if name != "description"},
                       "license": _license(license_version)})
    return resource


@transaction.atomic
def resource_update(*, resource: Resource, actor, values: dict[str, Any]) -> Resource:
    """Change `values` (RESOURCE_FIELDS); the event records each changed field before and after.
    Nothing changed, nothing recorded."""
    _require(actor, "datasets_app.change_resource", to=f"change the settings of {resource.repo_id}")
    current = Resource.objects.select_for_update().get(pk=resource.pk)
    repo_id = current.repo_id
    changes = _apply(current, values, RESOURCE_FIELDS)
    if changes:
        _valid(current)
        current.save(update_fields=list(changes))
        audit_record(action="resource_updated", actor=actor, target=current, resource=repo_id, data={"changes": changes})
    return current


@transaction.atomic
def resource_delete(*, resource: Resource, actor) -> None:
    """Only a resource nothing refers to yet (no version, request, grant or takedown) can go."""
    _require(actor, "datasets_app.delete_resource", to=f"delete {resource.repo_id}")
    audit_record(action="resource_deleted", actor=actor, target=resource, resource=resource.repo_id,
                 data={"title": resource.title, "access_policy": resource.access_policy})
    try:
        with transaction.atomic():
            resource.delete()
    except ProtectedError:
        raise GovernanceError(f"{resource.repo_id} has versions, requests, grants or takedowns, which the trail refers "
                              "to: it cannot be deleted. Make it gated with no reviewers to close it instead.") from None


@transaction.atomic
def resource_reviewers_set(*, resource: Resource, actor, reviewers: Iterable) -> list[str]:
    """Make `reviewers` the committee of `resource`; returns their usernames."""
    _require(actor, "datasets_app.change_resource", to=f"choose the reviewers of {resource.repo_id}")
    wanted = {user.pk: user for user in reviewers}
    before = {user.pk: user for user in resource.reviewers.all()}
    added = [wanted[pk] for pk in wanted.keys() - before.keys()]
    removed = [before[pk] for pk in before.keys() - wanted.keys()]
    if added or removed:
        resource.reviewers.remove(*removed)
        resource.reviewers.add(*added)
        audit_record(action="resource_reviewers_changed", actor=actor, target=resource, resource=resource.repo_id, data={
            "added": sorted(u.get_username() for u in added), "removed": sorted(u.get_username() for u in removed),
            "reviewers": sorted(u.get_username() for u in wanted.values()),
        })
    return sorted(u.get_username() for u in wanted.values())


def resource_license_check(*, resource: Resource, license_version: LicenseVersion | None) -> None:
    """Refuse a license change that would leave holders downloading under no agreement. The admin's
    form calls it to show the refusal on the field; resource_license_set calls it again."""
    if license_version is not None or resource.license_version_id is None:
        return
    holders = Grant.objects.filter(resource=resource, status=Grant.Status.ACTIVE).count()
    if holders:
        raise GovernanceError(f"{holders} people hold access to {resource.repo_id} under its license: without one they "
                              "would download under no agreement. Choose another license version instead.")


@transaction.atomic
def resource_license_set(*, resource: Resource, actor, license_version: LicenseVersion | None) -> Resource:
    """Move `resource` to another license version (of its license or of another). Its holders go
    through the re-acceptance flow, as when a new version of its license is published: their
    downloads pause until they accept the new text, and each gets an e-mail with a one-step link."""
    _require(actor, "datasets_app.change_resource", to=f"change the license of {resource.repo_id}")
    current = Resource.objects.select_for_update(of=("self",)).select_related("license_version__license").get(pk=resource.pk)
    if current.license_version_id == (license_version.pk if license_version else None):
        return current
    resource_license_check(resource=current, license_version=license_version)
    before = current.license_version
    current.license_version = license_version
    current.save(update_fields=["license_version"])
    told = license_holders_notify(resource=current, license_version=license_version) if license_version else 0
    audit_record(action="resource_license_changed", actor=actor, target=current, resource=current.repo_id,
                 data={"before": _license(before), "after": _license(license_version), "holders_asked_to_reaccept": told})
    return current


# --- Access questions ------------------------------------------------------------------------------


@transaction.atomic
def access_question_add(*, resource: Resource, actor, values: dict[str, Any]) -> AccessQuestion:
    """A new question on the access form of `resource` (QUESTION_FIELDS); later applicants answer it."""
    _require(actor, "datasets_app.add_accessquestion", to=f"add questions to the access form of {resource.repo_id}")
    question = AccessQuestion(resource=resource)
    _apply(question, values, QUESTION_FIELDS)
    _valid(question)
    question.save()
    audit_record(action="access_question_added", actor=actor, target=question, resource=resource.repo_id,
                 data={name: getattr(question, name) for name in QUESTION_FIELDS})
    return question


@transaction.atomic
def access_question_update(*, question: AccessQuestion, actor, values: dict[str, Any]) -> AccessQuestion:
    resource = question.resource
    _require(actor, "datasets_app.change_accessquestion", to=f"change the access form of {resource.repo_id}")
    current = AccessQuestion.objects.select_for_update().get(pk=question.pk)
    changes = _apply(current, values, QUESTION_FIELDS)
    if changes:
        _valid(current)
        current.save(update_fields=list(changes))
        audit_record(action="access_question_updated", actor=actor, target=current, resource=resource.repo_id,
                     data={"label": current.label, "changes": changes})
    return current


@transaction.atomic
def access_question_remove(*, question: AccessQuestion, actor) -> None:
    """Answers already given stay with their requests (each answer keeps its question's label)."""
    resource = question.resource
    _require(actor, "datasets_app.delete_accessquestion", to=f"remove questions from the access form of {resource.repo_id}")
    audit_record(action="access_question_removed", actor=actor, target=question, resource=resource.repo_id,
                 data={name: getattr(question, name) for name in QUESTION_FIELDS})
    question.delete()


# --- Restricted configs ------------------------------------------------------------------------------


def _config_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise GovernanceError("Name the config (as its files are labelled, e.g. fr or he).")
    if name == EVERY_CONFIG:
        raise GovernanceError(f"{EVERY_CONFIG!r} names every config at once (a version's manifest.json): "
                              "choose the name of one config.")
    return name


@transaction.atomic
def restricted_config_add(*, resource: Resource, actor, name: str, conditions: str) -> RestrictedConfig:
    """From now on grants reach this config only by name: holders of "every config" lose it."""
    _require(actor, "datasets_app.add_restrictedconfig", to=f"restrict a config of {resource.repo_id}")
    name = _config_name(name)
    if not conditions.strip():
        raise GovernanceError("Say what is stricter about this config: applicants read it.")
    try:
        with transaction.atomic():
            config = RestrictedConfig.objects.create(resource=resource, name=name, conditions=conditions.strip())
    except IntegrityError:
        raise GovernanceError(f"The {name} config of {resource.repo_id} is already restricted: change it instead.") from None
    audit_record(action="restricted_config_added", actor=actor, target=config, resource=resource.repo_id,
                 data={"name": name, "conditions": config.conditions})
    return config


@transaction.atomic
def restricted_config_update(*, restricted_config: RestrictedConfig, actor, name: str, conditions: str) -> RestrictedConfig:
    resource = restricted_config.resource
    _require(actor, "datasets_app.change_restrictedconfig", to=f"change the restricted configs of {resource.repo_id}")
    current = RestrictedConfig.objects.select_for_update().get(pk=restricted_config.pk)
    changes = _apply(current, {"name": _config_name(name), "conditions": conditions.strip()}, ("name", "conditions"))
    if not current.conditions:
        raise GovernanceError("Say what is stricter about this config: applicants read it.")
    if changes:
        try:
            with transaction.atomic():
                current.save(update_fields=list(changes))
        except IntegrityError:
            raise GovernanceError(f"The {current.name} config of {resource.repo_id} is already restricted.") from None
        audit_record(action="restricted_config_updated", actor=actor, target=current, resource=resource.repo_id,
                     data={"name": current.name, "changes": changes})
    return current


@transaction.atomic
def restricted_config_remove(*, restricted_config: RestrictedConfig, actor) -> None:
    """Holders of "every config" reach it again from now on."""
    resource = restricted_config.resource
    _require(actor, "datasets_app.delete_restrictedconfig", to=f"lift a restriction of {resource.repo_id}")
    audit_record(action="restricted_config_removed", actor=actor, target=restricted_config, resource=resource.repo_id,
                 data={"name": restricted_config.name, "conditions": restricted_config.conditions})
    restricted_config.delete()


# --- Exclusions (the takedown list) ----------------------------------------------------------------


@transaction.atomic
def exclusion_add(*, resource: Resource, actor, record_id: str = "", text_sha256: str = "", url: str = "",
                  note: str = "") -> Exclusion:
    """Builds of `resource` drop the record from now on. Accepted takedowns add theirs through
    takedowns.takedown_accept; this is for a custodian adding one by hand."""
    _require(actor, "datasets_app.add_exclusion", to=f"exclude records from {resource.repo_id}")
    record_id, text_sha256, url = record_id.strip(), text_sha256.strip().lower(), url.strip()
    if not (record_id or text_sha256 or url):
        raise GovernanceError("Name the record to exclude: its id, the sha256 of its text, or the page address it came from.")
    exclusion = Exclusion(resource=resource, record_id=record_id, text_sha256=text_sha256, url=url, note=note.strip(),
                          created_by=actor)
    _valid(exclusion)
    exclusion.save()
    audit_record(action="exclusion_added", actor=actor, target=exclusion, resource=resource.repo_id,
                 data={"record_id": record_id, "text_sha256": text_sha256, "url": url, "note": exclusion.note})
    return exclusion


@transaction.atomic
def exclusion_remove(*, exclusion: Exclusion, actor) -> None:
    """The next builds of the resource keep the record again."""
    resource = exclusion.resource
    _require(actor, "datasets_app.delete_exclusion", to=f"remove exclusions of {resource.repo_id}")
    audit_record(action="exclusion_removed", actor=actor, target=exclusion, resource=resource.repo_id, data={
        "record_id": exclusion.record_id, "text_sha256": exclusion.text_sha256, "url": exclusion.url,
        "note": exclusion.note, "takedown_id": exclusion.takedown_id,
    })
    exclusion.delete()


# --- Licenses --------------------------------------------------------------------------------------


def _license_resources(license: License) -> list[str]:
    """The resources under a version of `license`: where its title shows."""
    return [r.repo_id for r in Resource.objects.filter(license_version__license=license).order_by("namespace", "slug")]


@transaction.atomic
def license_create(*, actor, values: dict[str, Any]) -> License:
    """A new license (LICENSE_FIELDS), with no text yet: its first version is published from the
    license version page, and only then can a resource be put under it."""
    _require(actor, "datasets_app.add_license", to="add a license")
    license = License()
    _apply(license, values, LICENSE_FIELDS)
    _valid(license)
    license.save()
    audit_record(action="license_created", actor=actor, target=license,
                 data={name: getattr(license, name) for name in LICENSE_FIELDS})
    return license


@transaction.atomic
def license_update(*, license: License, actor, values: dict[str, Any]) -> License:
    """Rename a license (LICENSE_FIELDS). Holders need not re-accept: the text they accepted, and its
    sha256, are unchanged. The event names the resources whose pages show the new title."""
    _require(actor, "datasets_app.change_license", to=f"change the license {license.title}")
    current = License.objects.select_for_update().get(pk=license.pk)
    changes = _apply(current, values, LICENSE_FIELDS)
    if changes:
        _valid(current)
        current.save(update_fields=list(changes))
        audit_record(action="license_updated", actor=actor, target=current,
                     data={"changes": changes, "resources": _license_resources(current)})
    return current


@transaction.atomic
def license_delete(*, license: License, actor) -> None:
    """Only a license with no published version can go: requests and grants keep the texts people signed."""
    _require(actor, "datasets_app.delete_license", to=f"delete the license {license.title}")
    audit_record(action="license_deleted", actor=actor, target=license,
                 data={name: getattr(license, name) for name in LICENSE_FIELDS})
    try:
        with transaction.atomic():
            license.delete()
    except ProtectedError:
        raise GovernanceError(f"{license.title} has published versions, which requests and grants refer to: it cannot "
                              "be deleted. Publish a new version of it, or move its resources to another license.") from None


# --- Versions --------------------------------------------------------------------------------------
# Publishing is datasets_app.publishing's (a worker stores the files); here are the admin's edits.


@transaction.atomic
def version_changelog_update(*, version: Version, actor, changelog: str) -> Version:
    """Rewrite a version's changelog, published or not: it is the note researchers read beside its
    files, not part of its identity (its files and revision never change)."""
    _require(actor, "datasets_app.change_version", to=f"change the changelog of {version}")
    current = Version.objects.select_for_update(of=("self",)).select_related("resource").get(pk=version.pk)
    changes = _apply(current, {"changelog": changelog.strip()}, ("changelog",))
    if changes:
        current.save(update_fields=["changelog"])
        audit_record(action="version_changelog_updated", actor=actor, target=current, resource=current.resource.repo_id,
                     data={"version": current.name, "changes": changes})
    return current


@transaction.atomic
def version_delete_unpublished(*, version: Version, actor) -> None:
    """Delete a version nobody could download yet (a draft, or one whose publication failed or is still
    queued: its task then finds nothing to do). Published versions never go: the trail, the links and
    the takedown decisions name them."""
    _require(actor, "datasets_app.delete_version", to=f"delete the version {version}")
    current = Version.objects.select_for_update(of=("self",)).select_related("resource").filter(pk=version.pk).first()
    if current is None:
        raise GovernanceError(f"{version} was deleted meanwhile: reload the list of versions.")
    if current.published_at is not None:
        raise GovernanceError(f"{current} is published, and published versions are never deleted: publish a new "
                              "version instead, or accept a takedown to drop records from the next one.")
    stale = timezone.now() - timedelta(seconds=settings.PUBLISH_STALE_SECONDS)
    if current.status == Version.Status.PUBLISHING and current.publish_heartbeat_at and current.publish_heartbeat_at >= stale:
        raise GovernanceError(f"A worker is publishing {current} right now: wait until it is published or has failed.")
    if Build.objects.filter(version=current).exists():
        raise GovernanceError(f"{current} is the output of a shard build, whose record (sources, log, rejects) stays with "
                              "it: cancel the build if it still runs, and build under a new version name.")
    audit_record(action="version_deleted", actor=actor, target=current, resource=current.resource.repo_id,
                 data={"version": current.name, "status": current.status, "source": current.source, "error": current.error})
    current.delete()
