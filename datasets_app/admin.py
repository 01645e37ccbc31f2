from django import forms
from django.contrib import admin, messages

from datasets_app.models import (
    AccessQuestion, AccessRequest, AccessToken, DownloadEvent, File, Grant, License, LicenseVersion, Resource, Version,
)
from datasets_app.services import GovernanceError, license_version_publish
from datasets_app.source_roots import source_check
from datasets_app.tasks import publish_version
from portal.admin_site import ReadOnlyAdmin


class AccessQuestionInline(admin.TabularInline):
    model = AccessQuestion
    extra = 0


@admin.register(Resource)
class ResourceAdmin(admin.ModelAdmin):
    list_display = ["repo_id", "kind", "access_policy", "license_version", "default_grant_days"]
    list_filter = ["kind", "access_policy"]
    search_fields = ["namespace", "slug", "title"]
    filter_horizontal = ["reviewers"]
    inlines = [AccessQuestionInline]


class LicenseVersionInline(admin.StackedInline):
    model = LicenseVersion
    extra = 0
    fields = ["version", "sha256", "created_at", "text"]
    readonly_fields = ["version", "sha256", "created_at", "text"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        # New versions go through the publish action, which moves resources and asks holders to re-accept.
        return False


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin):
    list_display = ["title", "slug"]
    inlines = [LicenseVersionInline]


@admin.register(LicenseVersion)
class LicenseVersionAdmin(admin.ModelAdmin):
    list_display = ["license", "version", "sha256", "created_at"]
    fields = ["license", "version", "text", "sha256"]
    readonly_fields = ["sha256"]

    def get_readonly_fields(self, request, obj=None):
        return ["license", "version", "text", "sha256"] if obj else ["sha256"]

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            published = license_version_publish(license=obj.license, version=obj.version, text=obj.text, actor=request.user)
        except GovernanceError as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        obj.pk = published.pk
        obj.sha256 = published.sha256
        moved = published.resources.count()
        self.message_user(request, f"Published {published}; {moved} resource(s) now ask their holders to accept it.")

    def has_delete_permission(self, request, obj=None):
        return False


class FileInline(admin.TabularInline):
    model = File
    extra = 0
    fields = ["path", "size", "sha256", "config", "content_type"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class VersionAddForm(forms.ModelForm):
    def clean_source(self):
        source = self.cleaned_data["source"].strip()
        try:  # the worker checks again as it publishes; here the custodian sees the refusal at once
            source_check(source)
        except GovernanceError as error:
            raise forms.ValidationError(str(error)) from None
        return source


@admin.register(Version)
class VersionAdmin(admin.ModelAdmin):
    """Adding a version here queues its publication from a folder or s3:// prefix on a worker."""

    form = VersionAddForm
    list_display = ["resource", "name", "status", "revision", "published_at"]
    list_filter = ["status"]
    inlines = [FileInline]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["resource", "name", "source", "changelog"]
        return ["resource", "name", "status", "source", "revision", "published_at", "error", "changelog"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["resource", "name", "status", "source", "revision", "published_at", "error"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.status = Version.Status.QUEUED
        super().save_model(request, obj, form, change)
        if not change:
            publish_version.delay_on_commit(obj.pk, request.user.pk)
            self.message_user(request, f"Publishing {obj} from {obj.source} on a worker; refresh this page to follow it.")

    def has_delete_permission(self, request, obj=None):
        return obj is not None and obj.published_at is None


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyAdmin):
    list_display = ["user", "resource", "status", "submitted_at", "decided_by", "decided_at"]
    list_filter = ["status", "resource"]
    search_fields = ["user__username", "user__email"]


@admin.register(Grant)
class GrantAdmin(ReadOnlyAdmin):
    list_display = ["user", "resource", "status", "created_at", "expires_at", "license_version"]
    list_filter = ["status", "resource"]
    search_fields = ["user__username", "user__email"]


@admin.register(AccessToken)
class AccessTokenAdmin(ReadOnlyAdmin):
    list_display = ["user", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]
    search_fields = ["user__username", "prefix", "name"]


@admin.register(DownloadEvent)
class DownloadEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "username", "resource", "version", "path", "byte_range", "ip"]
    list_filter = ["resource"]
    search_fields = ["username", "resource", "path", "ip"]
    date_hierarchy = "created_at"

from datasets_app import admin_builds  # noqa: E402,F401 (the shard builds and the takedown list)
