from django.contrib import admin

from portal.models import AuditEvent, Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "full_name", "affiliation", "country", "position"]
    search_fields = ["user__username", "user__email", "full_name", "affiliation"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["seq", "created_at", "action", "actor", "resource", "target_type", "target_id"]
    list_filter = ["action"]
    search_fields = ["actor", "resource", "target_id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
