from django.contrib import admin

from inference.models import InferenceJob
from portal.admin_site import ReadOnlyAdmin


@admin.register(InferenceJob)
class InferenceJobAdmin(ReadOnlyAdmin):
    """Jobs change only through inference.services and the runner (limits, leases, audit events)."""

    list_display = ("public_id", "user", "version", "kind", "via", "status", "prompt_tokens", "completion_tokens", "created_at", "finished_at")
    list_filter = ("status", "kind", "via", "resource")
    search_fields = ("public_id", "user__username", "resource__slug")
    list_select_related = ("user", "version__resource")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in InferenceJob._meta.fields]
