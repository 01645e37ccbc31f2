from django.contrib import admin

from portal.admin_site import ReadOnlyAdmin
from portal.models import AuditEvent, Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "full_name", "affiliation", "country", "position"]
    search_fields = ["user__username", "user__email", "full_name", "affiliation"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created_at", "action", "actor", "resource", "target_type", "target_id"]
    list_filter = ["action"]
    search_fields = ["actor", "resource", "target_id"]
