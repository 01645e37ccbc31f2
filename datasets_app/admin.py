from django.contrib import admin, messages

from datasets_app.models import AccessQuestion, AccessRequest, Grant, License, LicenseVersion, Resource, Version
from datasets_app.services import GovernanceError, license_version_publish
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


@admin.register(Version)
class VersionAdmin(admin.ModelAdmin):
    list_display = ["resource", "name", "revision", "published_at"]

    def get_readonly_fields(self, request, obj=None):
        return ["resource", "name", "revision", "published_at"] if obj and obj.published_at else ["revision", "published_at"]


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
