from django.contrib import admin
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from portal.mfa import has_totp, session_used_mfa
from portal.models import AuditEvent, Profile


class PortalAdminSite(admin.AdminSite):
    """The admin, behind the same sign-in (throttled) and second factor as reviewers."""

    site_header = "Release portal administration"

    def has_permission(self, request) -> bool:
        return super().has_permission(request) and session_used_mfa(request)

    def login(self, request, extra_context=None):
        target = request.GET.get("next") or reverse("admin:index")
        if request.user.is_authenticated and request.user.is_active and request.user.is_staff:
            step = "mfa_reauthenticate" if has_totp(request.user) else "mfa_activate_totp"
            return redirect(f"{reverse(step)}?{urlencode({'next': target})}")
        return redirect(f"{reverse('account_login')}?{urlencode({'next': target})}")


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
