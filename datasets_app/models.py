from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9._-]{0,94}[a-z0-9])?$",
    "Use lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit.",
)


def portal_path_segments() -> set[str]:
    """The first segments of the portal's own URLs (d, admin, api, resources, static...), read from the
    URL conf and the static files' URL."""
    from django.urls import get_resolver

    segments = {settings.STATIC_URL.strip("/").split("/", 1)[0]} - {""}
    todo = list(get_resolver().url_patterns)
    while todo:
        pattern = todo.pop()
        first = str(pattern.pattern).lstrip("^").split("/", 1)[0]
        if not first and hasattr(pattern, "url_patterns"):  # include("...") at the root
            todo.extend(pattern.url_patterns)
        elif first and "<" not in first and "(" not in first:
            segments.add(first)
    return segments


def namespace_validator(value: str) -> None:
    # The Hub protocol serves a model's files at /<namespace>/<slug>/resolve/...: a namespace that is
    # one of the portal's own paths would be answered by that page instead.
    if value in portal_path_segments():
        raise ValidationError(f"'{value}' is a path of the portal itself (/{value}/...): choose another namespace.")


class License(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.title


class LicenseVersion(models.Model):
    """The exact text of one version of a license; never edited once saved."""

    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=32)
    text = models.TextField()
    sha256 = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["license", "version"], name="license_version_unique")]
        ordering = ["license", "-created_at"]

    def __str__(self) -> str:
        return f"{self.license.title} v{self.version}"

    @staticmethod
    def digest(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Resource(models.Model):
    class Kind(models.TextChoices):
        DATASET = "dataset", "Dataset"
        CHECKPOINT = "checkpoint", "Model checkpoint"

    class Policy(models.TextChoices):
        OPEN = "open", "Open to everyone"
        REGISTERED = "registered", "Registered users"
        GATED_AUTO = "gated_auto", "Gated, approved automatically"
        GATED_MANUAL = "gated_manual", "Gated, reviewed by the committee"

    namespace = models.CharField(max_length=100, validators=[slug_validator, namespace_validator])
    slug = models.CharField(max_length=100, validators=[slug_validator])
    kind = models.CharField(max_length=16, choices=Kind.choices)
    title = models.CharField(max_length=200)
    summary = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)
    access_policy = models.CharField(max_length=16, choices=Policy.choices, default=Policy.GATED_MANUAL)
    license_version = models.ForeignKey(
        LicenseVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="resources",
        help_text="The license users accept now. Pointing this at a newer version asks every holder to re-accept.",
    )
    auto_approve_domains = models.TextField(
        blank=True,
        help_text="One e-mail domain per line (e.g. inria.fr). Applicants with a verified institutional "
        "address at one of them are approved without review.",
    )
    default_grant_days = models.PositiveIntegerField(default=365)
    reviewers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="reviewed_resources")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["namespace", "slug"], name="resource_id_unique")]
        ordering = ["namespace", "slug"]

    def __str__(self) -> str:
        return self.repo_id

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.slug}"

    @property
    def is_gated(self) -> bool:
        return self.access_policy in (self.Policy.GATED_AUTO, self.Policy.GATED_MANUAL)

    def get_absolute_url(self) -> str:
        return reverse("resource_detail", kwargs={"namespace": self.namespace, "slug": self.slug})

    def auto_approve_domain_list(self) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in self.auto_approve_domains.split() if d.strip()]


class Version(models.Model):
    """An immutable published state of a resource and its files."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        QUEUED = "queued", "Queued for publishing"
        PUBLISHING = "publishing", "Publishing"
        PUBLISHED = "published", "Published"
        FAILED = "failed", "Failed"

    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="versions")
    name = models.CharField(max_length=64, validators=[slug_validator])
    revision = models.CharField(max_length=40, blank=True, help_text="40-hex id derived from the manifest.")
    changelog = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    source = models.CharField(max_length=1000, blank=True, help_text="Local folder or s3://bucket/prefix it is published from.")
    error = models.TextField(blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The publish claim: which attempt holds the version, and when it last showed life. A live
    # attempt is never joined by a second one (a redelivered or repeated message); one whose
    # heartbeat is older than PUBLISH_STALE_SECONDS died, and the next attempt takes over.
    publish_attempt = models.PositiveIntegerField(default=0)
    publish_heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["resource", "name"], name="version_name_unique"),
            models.CheckConstraint(
                condition=Q(published_at__isnull=True) | Q(revision__regex=r"^[0-9a-f]{40}$"),
                name="version_published_has_revision",
            ),
            models.CheckConstraint(
                condition=Q(status="published", published_at__isnull=False) | (~Q(status="published") & Q(published_at__isnull=True)),
                name="version_status_matches_publication",
            ),
        ]
        ordering = ["resource", "-created_at"]

    def __str__(self) -> str:
        return f"{self.resource.repo_id}@{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("version_download", kwargs={"namespace": self.resource.namespace, "slug": self.resource.slug, "version": self.name})


# The config of a file that describes every config of its version (its manifest.json): only a
# grant that reaches every config reaches it. No language config can be named so
# (datasets_app.shards.spec.ALL_CONFIG, the dataset card's config of every shard).
EVERY_CONFIG = "all"


class File(models.Model):
    """One object of a version. Published files never change (a database trigger guards it)."""

    version = models.ForeignKey(Version, on_delete=models.PROTECT, related_name="files")
    path = models.CharField(max_length=1000)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=200, default="application/octet-stream")
    storage_key = models.CharField(max_length=1000)
    config = models.CharField(max_length=200, blank=True, help_text="The subset (config) this file belongs to, if any.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="file_path_unique_in_version"),
            models.CheckConstraint(condition=Q(size__gte=0), name="file_size_not_negative"),
        ]
        ordering = ["version", "path"]

    def __str__(self) -> str:
        return f"{self.version}:{self.path}"

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class AccessQuestion(models.Model):
    """A custom question on a resource's access form, defined by an admin."""

    class Kind(models.TextChoices):
        TEXT = "text", "Text"
        CHECKBOX = "checkbox", "Checkbox"
        CHOICE = "choice", "Choice"
        COUNTRY = "country", "Country"

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="questions")
    label = models.CharField(max_length=300)
    help_text = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TEXT)
    choices = models.TextField(blank=True, help_text="For a choice question: one option per line.")
    required = models.BooleanField(default=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["resource", "position", "id"]

    def __str__(self) -> str:
        return self.label

    def choice_list(self) -> list[str]:
        return [c.strip() for c in self.choices.splitlines() if c.strip()]


class AccessRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending review"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    OPEN_STATUSES = (Status.PENDING, Status.CHANGES_REQUESTED)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests")
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="access_requests")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    license_version = models.ForeignKey(LicenseVersion, on_delete=models.PROTECT, null=True, related_name="+")
    license_sha256 = models.CharField(max_length=64, blank=True)
    intended_use = models.TextField()
    answers = models.JSONField(default=list, blank=True)
    signature = models.CharField(max_length=200)
    submitted_at = models.DateTimeField(default=timezone.now)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decision_reason = models.TextField(blank=True)
    auto_approved = models.BooleanField(default=False)
    # The configs asked for, with the same meaning as on Grant.
    all_configs = models.BooleanField(default=True)
    configs = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            # Submitting twice (double click, two tabs) cannot open two requests.
            models.UniqueConstraint(
                fields=["user", "resource"],
                condition=Q(status__in=["pending", "changes_requested"]),
                name="one_open_request_per_user_resource",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "submitted_at"], name="request_queue_idx", condition=Q(status="pending")),
        ]
        ordering = ["submitted_at"]

    def __str__(self) -> str:
        return f"{self.user} → {self.resource} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class Grant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"
        SUPERSEDED = "superseded", "Renewed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grants")
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="grants")
    request = models.OneToOneField(AccessRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="grant")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    license_version = models.ForeignKey(LicenseVersion, on_delete=models.PROTECT, null=True, related_name="+")
    license_accepted_at = models.DateTimeField(default=timezone.now)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    reason = models.TextField(blank=True, help_text="Why it was granted outside a request (command line).")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    reminder_sent_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    end_reason = models.TextField(blank=True)
    # Which configs (language subsets) it covers: every unrestricted one when all_configs,
    # plus those named in `configs`; a restricted config is covered only when named.
    all_configs = models.BooleanField(default=True)
    configs = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "resource"], condition=Q(status="active"), name="one_active_grant_per_user_resource"
            ),
            models.CheckConstraint(condition=Q(expires_at__gt=models.F("created_at")), name="grant_expires_after_creation"),
        ]
        indexes = [
            models.Index(fields=["expires_at"], name="grant_active_expiry_idx", condition=Q(status="active")),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} ← {self.resource} ({self.status})"

    @property
    def is_current(self) -> bool:
        return self.status == self.Status.ACTIVE and self.expires_at > timezone.now()

    @property
    def needs_reacceptance(self) -> bool:
        current = self.resource.license_version_id
        return current is not None and current != self.license_version_id


class AccessToken(models.Model):
    """A personal token for scripts and clients. Only its sha256 is stored."""

    class Scope(models.TextChoices):
        READ = "read", "read: download files and link lists"
        INFERENCE = "inference", "inference: submit generation and scoring jobs"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The first characters, to recognise a token without storing it.")
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class DownloadEvent(models.Model):
    """One served request through a signed link: who, which file, which bytes, under which grant.

    Downloads are the portal's busiest write, so they do not take the audit chain's
    lock one by one: each row is appended by the same statement that checks the
    grant, and a periodic task seals the new rows into the hash chain as one
    `downloads_sealed` event carrying their digest (see datasets_app.download_events).
    Recorded by value, like AuditEvent, and append-only on PostgreSQL.
    """

    created_at = models.DateTimeField()
    user_id = models.BigIntegerField(null=True, blank=True)
    username = models.CharField(max_length=150, blank=True)
    file_id = models.BigIntegerField()
    resource = models.CharField(max_length=201)
    version = models.CharField(max_length=64)
    path = models.CharField(max_length=1024)
    grant_id = models.BigIntegerField(null=True, blank=True)
    link_grant_id = models.BigIntegerField(null=True, blank=True)
    license_version_id = models.BigIntegerField(null=True, blank=True)
    method = models.CharField(max_length=8)
    byte_range = models.CharField(max_length=100, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.username or 'anonymous'} fetched {self.resource}@{self.version}/{self.path}"


class Build(models.Model):
    """A shard build of a dataset Version from registered sources, run by a Celery worker.

    A worker claims the build with a conditional update and keeps `heartbeat_at` fresh
    while it runs; a build whose heartbeat stops (its worker was killed) is put back in
    the queue by `builds_recover`, and the next attempt starts from scratch. The version
    stays unpublished until every shard is stored and verified.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Published"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    version = models.OneToOneField(Version, on_delete=models.PROTECT, related_name="build")
    sources = models.JSONField(help_text="The registered sources: uri, format, column mapping.")
    params = models.JSONField(default=dict, help_text="Shard size, on_error, dedup, scrub_pii, default language.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempt = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    phase = models.CharField(max_length=16, blank=True)
    records_read = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    records_written = models.BigIntegerField(default=0)
    configs_written = models.PositiveIntegerField(default=0)
    configs_total = models.PositiveIntegerField(default=0)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="Counts, per-language statistics and sampled rejects.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The recovery task's query: running builds whose heartbeat went quiet.
            models.Index(fields=["heartbeat_at"], name="build_running_heartbeat_idx", condition=Q(status="running")),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"build of {self.version} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def percent(self) -> int:
        """Reading is most of the work; writing the configs is the rest."""
        if self.status == self.Status.SUCCEEDED:
            return 100
        read = self.bytes_read / self.bytes_total if self.bytes_total else 0.0
        written = self.configs_written / self.configs_total if self.configs_total else 0.0
        return min(99, int(80 * read + 19 * written))


class Exclusion(models.Model):
    """A record that must never be published again (a takedown): by id, by the sha256 of its
    normalised text (datasets_app.shards.text_sha256), or every record taken from a web page,
    by its URL (for sources whose records keep a `url` column). Builds drop matching records."""

    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="exclusions")
    record_id = models.CharField(max_length=500, blank=True)
    text_sha256 = models.CharField(max_length=64, blank=True)
    url = models.CharField(max_length=2000, blank=True, help_text="A page's address: records taken from it are dropped, "
                           "however it is spelled (http or https, host case, a #fragment or a trailing slash aside).")
    note = models.TextField(blank=True, help_text="Why: the takedown request or decision it comes from.")
    takedown = models.ForeignKey("Takedown", on_delete=models.PROTECT, null=True, blank=True, related_name="exclusions")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(record_id="") | Q(text_sha256__regex=r"^[0-9a-f]{64}$") | ~Q(url=""),
                                   name="exclusion_names_a_record_a_text_or_a_url"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.resource}: {self.record_id or self.url or self.text_sha256[:12]}"


class RestrictedConfig(models.Model):
    """A config of a dataset with stricter conditions: a grant covers it only by name."""

    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="restricted_configs")
    name = models.CharField(max_length=200)
    conditions = models.TextField(help_text="What is stricter, shown to applicants (e.g. 'Contains health forum posts: ethics approval required').")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["resource", "name"], name="restricted_config_unique")]
        ordering = ["resource", "name"]

    def __str__(self) -> str:
        return f"{self.resource.repo_id}:{self.name} (restricted)"


class Takedown(models.Model):
    """A request to remove content from the corpus, and its decision."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="takedowns")
    record_id = models.CharField(max_length=500, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    excerpt = models.TextField(blank=True)
    contact_name = models.CharField(max_length=200)
    contact_email = models.EmailField()
    reason = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    created_at = models.DateTimeField(default=timezone.now)
    ip = models.GenericIPAddressField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    affected_versions = models.ManyToManyField(Version, blank=True, related_name="takedowns",
                                               help_text="Published versions found to contain the content (flagged).")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(record_id="") | ~Q(url="") | ~Q(excerpt=""), name="takedown_identifies_content"),
        ]
        indexes = [models.Index(fields=["created_at"], name="takedown_open_idx", condition=Q(status="received"))]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"takedown #{self.pk} on {self.resource.repo_id} ({self.status})"
