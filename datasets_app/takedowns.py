"""Takedown requests: receiving them, finding the content in published versions, deciding them.

An accepted takedown puts the content on the resource's exclusion list (by record id, by
the sha256 of the normalised text, see datasets_app.shards.text_sha256, and by the URL of
the page it was taken from, for sources that keep a `url` column), which every later
build drops. Published versions never change, so the ones that contain the content
are flagged instead, and the holders of active grants are asked to delete the records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from datasets_app import notifications
from datasets_app import storage as store
from datasets_app.authz import acting_user, actor_trail, can_review
from datasets_app.models import Exclusion, Grant, Resource, Takedown, Version
from datasets_app.services import GovernanceError
from portal.audit import audit_record
from portal.mail_limits import unverified_mail_count
from portal.validators import validate_one_line

# More matches than this in one version means the excerpt is too general to be one
# person's content; the scan stops there and accepting is refused (see takedown_accept).
MATCH_LIMIT = 1000
# Rows read at a time: the scan's memory is one batch of `id` and `text`, whatever the shard size.
BATCH_ROWS = 8192
# A version's files and a takedown's content never change, so a scan's answer never goes stale.
SCAN_CACHE_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Match:
    record_id: str
    text_sha256: str


def published_versions(resource: Resource):
    return Version.objects.filter(resource=resource, status=Version.Status.PUBLISHED).order_by("published_at", "pk")


# --- Finding the content -----------------------------------------------------------------------------


def versions_containing(*, takedown: Takedown) -> dict[Version, list[str]]:
    """The published versions of the takedown's resource that contain its content, with the
    ids of the matching records (at most MATCH_LIMIT per version)."""
    found = {}
    for version in published_versions(takedown.resource):
        matches = _version_matches(version=version, takedown=takedown)
        if matches:
            found[version] = [m.record_id for m in matches]
    return found


def _canonical_url(takedown: Takedown) -> str:
    from datasets_app.shards.urls import canonical_url

    return canonical_url(takedown.url) if takedown.url.strip() else ""


def _version_matches(*, version: Version, takedown: Takedown) -> list[Match]:
    from datasets_app.shards import normalize_text

    needle = normalize_text(takedown.excerpt) if takedown.excerpt.strip() else ""
    url = _canonical_url(takedown)
    if not takedown.record_id and not needle and not url:
        return []
    identity = json.dumps([version.revision, takedown.record_id, needle, url], ensure_ascii=False)
    key = "takedown-scan:" + hashlib.sha256(identity.encode()).hexdigest()
    cached = cache.get(key)
    if cached is None:
        cached = [(m.record_id, m.text_sha256) for m in _scan(version, record_id=takedown.record_id, needle=needle, url=url)]
        cache.set(key, cached, SCAN_CACHE_SECONDS)
    return [Match(*pair) for pair in cached]


def _record_shards(version: Version):
    """(file, its Arrow schema) for each Parquet shard of records (`id` and `text` columns) of the version."""
    import pyarrow.parquet as pq

    storage = store.release_storage()
    for file in version.files.filter(path__endswith=".parquet").order_by("path"):
        with storage.open(file.storage_key, "rb") as handle:
            schema = pq.ParquetFile(handle).schema_arrow
        if {"id", "text"} <= set(schema.names):  # a published folder may hold other tables
            yield file, schema


def _keeps_urls(schema) -> bool:
    """Whether a shard's records carry the URL they were taken from (a string `url` column)."""
    import pyarrow as pa

    from datasets_app.shards.urls import URL_COLUMN

    return URL_COLUMN in schema.names and pa.types.is_string(schema.field(URL_COLUMN).type)


def version_keeps_urls(version: Version) -> bool:
    key = f"takedown-url-column:{version.revision}"
    keeps = cache.get(key)
    if keeps is None:
        keeps = any(_keeps_urls(schema) for _, schema in _record_shards(version))
        cache.set(key, keeps, SCAN_CACHE_SECONDS)
    return keeps


def url_lookup_possible(resource: Resource) -> bool:
    """Whether a URL alone can find content: some published version keeps its records' URLs. A request
    giving only a URL is refused on submission and on acceptance otherwise (the README says so)."""
    return any(version_keeps_urls(version) for version in published_versions(resource))


def versions_without_urls(*, takedown: Takedown) -> list[Version]:
    """The published versions a takedown's URL cannot be looked up in: their records keep no URL."""
    if not takedown.url.strip():
        return []
    return [version for version in published_versions(takedown.resource) if not version_keeps_urls(version)]


def _scan(version: Version, *, record_id: str, needle: str, url: str) -> list[Match]:
    """Read the version's Parquet shards a batch at a time, `id`, `text` (and `url`) only.

    A record matches by its id, when its normalised text contains the normalised excerpt
    (that includes the exact match, text_sha256(text) == text_sha256(excerpt), since both
    hash the same normalisation), or when its `url` names the same page as the takedown's.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from datasets_app.shards.normalize import normalize_texts, text_digests
    from datasets_app.shards.urls import URL_COLUMN, url_hits

    found: dict[str, Match] = {}
    storage = store.release_storage()
    for file, schema in _record_shards(version):
        by_url = bool(url) and _keeps_urls(schema)
        if not (record_id or needle or by_url):
            continue
        with storage.open(file.storage_key, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["id", "text"] + ([URL_COLUMN] if by_url else [])):
                ids, texts = batch.column("id").cast(pa.string()), batch.column("text")
                hit = pc.equal(ids, record_id) if record_id else pa.array([False] * len(ids))
                if needle:
                    hit = pc.or_(hit, pc.match_substring(normalize_texts(texts), needle))
                if by_url:
                    hit = pc.or_(hit, pa.array(url_hits(batch.column(URL_COLUMN), frozenset({url}))))
                hit = pc.fill_null(hit, False)
                if not pc.any(hit).as_py():
                    continue
                digests = text_digests(texts.filter(hit))
                for index, rid in enumerate(ids.filter(hit).to_pylist()):
                    found.setdefault(rid, Match(rid, bytes(digests[index]).hex()))
                if len(found) >= MATCH_LIMIT:
                    return list(found.values())[:MATCH_LIMIT]
    return list(found.values())


# --- Receiving -------------------------------------------------------------------------------------


@transaction.atomic
def takedown_submit(
    *, resource: Resource, record_id: str, url: str, excerpt: str, contact_name: str, contact_email: str,
    reason: str, ip: str | None,
) -> Takedown:
    record_id, url, excerpt = record_id.strip(), url.strip(), excerpt.strip()
    if resource.kind != Resource.Kind.DATASET:
        raise GovernanceError(f"{resource.repo_id} is a model checkpoint, not a dataset: choose the dataset the content is in.")
    if not (record_id or url or excerpt):
        raise GovernanceError("Identify the content: give its record id, the URL it was taken from, or an excerpt of its text.")
    if url and not (record_id or excerpt) and not url_lookup_possible(resource):
        raise GovernanceError(
            f"{resource.repo_id} keeps no URL for its records, so a URL alone cannot find the content: "
            "give its record id or an excerpt of its text as well.", field="url")
    if not reason.strip():
        raise GovernanceError("Say why the content should be removed: the custodians decide on that reason.")
    for value, label in ((contact_name, "Your name"), (contact_email, "Your e-mail")):
        try:
            validate_one_line(value, label=label)
        except ValidationError as error:
            raise GovernanceError(error.messages[0]) from None
    # The contact address is whatever the visitor typed: the acknowledgment to it is limited, and
    # says nothing the visitor wrote (takedown_received_requester), so the form cannot carry a message to anyone.
    if contact_email.strip():
        unverified_mail_count(ip=ip, recipient=contact_email.strip())
    takedown = Takedown.objects.create(
        resource=resource, record_id=record_id, url=url, excerpt=excerpt, contact_name=contact_name.strip(),
        contact_email=contact_email.strip(), reason=reason.strip(), ip=ip or None,
    )
    audit_record(
        action="takedown_received", target=takedown, resource=resource.repo_id,
        data={"takedown": takedown.pk, "record_id": record_id, "url": url,
              "excerpt_sha256": _excerpt_sha256(excerpt), "contact_email": takedown.contact_email, "ip": ip},
    )
    review_url = notifications._absolute(reverse("takedown_detail", kwargs={"pk": takedown.pk}))
    notifications._send(to=notifications._reviewer_emails(resource), template="takedown_received_custodian",
                        context={"takedown": takedown, "resource": resource, "review_url": review_url})
    notifications._send(to=[takedown.contact_email], template="takedown_received_requester",
                        context={"takedown": takedown, "resource": resource})
    return takedown


def _excerpt_sha256(excerpt: str) -> str:
    from datasets_app.shards import text_sha256

    return text_sha256(excerpt) if excerpt else ""


# --- Deciding --------------------------------------------------------------------------------------


def _check_reviewer(takedown: Takedown, reviewer) -> None:
    if not can_review(reviewer, takedown.resource):
        raise GovernanceError(f"You do not review {takedown.resource.repo_id}: ask an administrator to assign you.")


def _already_decided(takedown: Takedown) -> GovernanceError:
    return GovernanceError(
        f"Takedown #{takedown.pk} was already {takedown.get_status_display().lower()} by "
        f"{takedown.decided_by or 'someone else'} on {timezone.localtime(takedown.decided_at):%d %B %Y}; "
        "nothing was changed. Reload the takedown queue."
    )


def _claim(takedown: Takedown, *, status: str, reviewer, note: str) -> None:
    """Decide a takedown exactly once: a second decision, or a second reviewer at the same time, is refused."""
    claimed = Takedown.objects.filter(pk=takedown.pk, status=Takedown.Status.RECEIVED).update(
        status=status, decided_by=acting_user(reviewer), decided_at=timezone.now(), decision_note=note,
    )
    takedown.refresh_from_db()
    if claimed != 1:
        raise _already_decided(takedown)


def takedown_accept(*, takedown: Takedown, reviewer, note: str) -> Takedown:
    """Put the content on the exclusion list, flag the published versions that contain it,
    and tell the holders of active grants and the requester."""
    _check_reviewer(takedown, reviewer)
    takedown.refresh_from_db()
    if takedown.status != Takedown.Status.RECEIVED:
        raise _already_decided(takedown)
    # Scanned before the transaction: on SQLite a write transaction locks out every writer, and
    # a scan of a large version takes a while. Versions published meanwhile are scanned below.
    scanned = {version.pk: _version_matches(version=version, takedown=takedown)
               for version in published_versions(takedown.resource)}
    try:
        with transaction.atomic():
            _accept(takedown, reviewer=reviewer, note=note.strip(), scanned=scanned)
    except GovernanceError:
        takedown.refresh_from_db()  # the claim was rolled back with the rest
        raise
    return takedown


def _accept(takedown: Takedown, *, reviewer, note: str, scanned: dict[int, list[Match]]) -> None:
    _claim(takedown, status=Takedown.Status.ACCEPTED, reviewer=reviewer, note=note.strip())
    matches: dict[Version, list[Match]] = {}
    for version in published_versions(takedown.resource):
        found = scanned[version.pk] if version.pk in scanned else _version_matches(version=version, takedown=takedown)
        if found:
            matches[version] = found
    too_many = [v.name for v, found in matches.items() if len(found) >= MATCH_LIMIT]
    if too_many:
        raise GovernanceError(
            f"The excerpt of takedown #{takedown.pk} matches {MATCH_LIMIT} or more records of {too_many[0]}: too "
            "general to be removed as it stands. Reject it, asking the requester for the record ids or a longer excerpt."
        )
    only_url = not takedown.record_id and not takedown.excerpt.strip()
    if only_url and not matches and not url_lookup_possible(takedown.resource):
        raise GovernanceError(
            f"Takedown #{takedown.pk} gives only a URL and nothing was found to exclude. Reject it, asking the "
            "requester for the record id or an excerpt of the text, so that builds can recognise the content: "
            f"no published version of {takedown.resource.repo_id} keeps the URL of its records to look it up in."
        )
    exclusions = _exclusions(takedown, matches, reviewer)
    Exclusion.objects.bulk_create(exclusions)
    takedown.affected_versions.set(matches)
    record_ids = sorted({e.record_id for e in exclusions if e.record_id})
    audit_record(
        action="takedown_accepted", actor=acting_user(reviewer), target=takedown, resource=takedown.resource.repo_id,
        data={"takedown": takedown.pk, "note": takedown.decision_note, "record_ids": record_ids, **actor_trail(reviewer),
              "text_sha256": sorted({e.text_sha256 for e in exclusions if e.text_sha256}),
              "urls": sorted({e.url for e in exclusions if e.url}),
              "affected_versions": {v.name: [m.record_id for m in found] for v, found in matches.items()}},
    )
    _notify_accepted(takedown, versions=list(matches), record_ids=record_ids)


def _exclusions(takedown: Takedown, matches: dict[Version, list[Match]], reviewer) -> list[Exclusion]:
    note = f"Takedown #{takedown.pk}: {takedown.decision_note}".strip().rstrip(":")
    rows: dict[tuple[str, str, str], Exclusion] = {}

    def add(record_id: str, digest: str, url: str = "") -> None:
        rows.setdefault((record_id, digest, url), Exclusion(
            resource=takedown.resource, record_id=record_id, text_sha256=digest, url=url, note=note, takedown=takedown,
            created_by=acting_user(reviewer),
        ))

    for found in matches.values():
        for match in found:
            add(match.record_id, match.text_sha256)
    if takedown.record_id and not any(key[0] == takedown.record_id for key in rows):
        add(takedown.record_id, "")
    excerpt_digest = _excerpt_sha256(takedown.excerpt)
    if excerpt_digest and not any(key[1] == excerpt_digest for key in rows):
        # A copy of the excerpt under another id, in a source not yet built, is dropped too.
        add("", excerpt_digest)
    if takedown.url.strip():
        # Records taken from the page later (a new crawl, another source) are dropped too, where sources keep their URL.
        add("", "", takedown.url.strip())
    return list(rows.values())


def _notify_accepted(takedown: Takedown, *, versions: list[Version], record_ids: list[str]) -> None:
    resource = takedown.resource
    context = {"takedown": takedown, "resource": resource, "versions": versions, "record_ids": record_ids,
               "resource_url": notifications._absolute(resource.get_absolute_url())}
    if versions:
        holders = Grant.objects.filter(resource=resource, status=Grant.Status.ACTIVE, expires_at__gt=timezone.now()).select_related("user")
        for grant in holders:
            # One message each: holders must not learn who else holds the data.
            notifications._send(to=[grant.user.email], template="takedown_accepted_holder", context={**context, "grant": grant})
    notifications._send(to=[takedown.contact_email], template="takedown_accepted_requester", context=context)


@transaction.atomic
def takedown_reject(*, takedown: Takedown, reviewer, reason: str) -> Takedown:
    _check_reviewer(takedown, reviewer)
    if not reason.strip():
        raise GovernanceError("Give a reason for the rejection: the requester will read it.")
    _claim(takedown, status=Takedown.Status.REJECTED, reviewer=reviewer, note=reason.strip())
    audit_record(
        action="takedown_rejected", actor=acting_user(reviewer), target=takedown, resource=takedown.resource.repo_id,
        data={"takedown": takedown.pk, "reason": takedown.decision_note, **actor_trail(reviewer)},
    )
    form_url = notifications._absolute(reverse("takedown_form") + f"?resource={takedown.resource.repo_id}")
    notifications._send(to=[takedown.contact_email], template="takedown_rejected_requester",
                        context={"takedown": takedown, "resource": takedown.resource, "form_url": form_url})
    return takedown
