from django.contrib import admin
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from portal.mfa import has_totp, session_used_mfa


class PortalAdminSite(admin.AdminSite):
    """The admin, behind the same sign-in (throttled) and second factor as reviewers.

    It lives apart from portal/admin.py: Django builds the site before the apps'
    admin modules register their models on it.
    """

    site_header = "Release portal administration"

    def has_permission(self, request) -> bool:
        return super().has_permission(request) and session_used_mfa(request)

    def login(self, request, extra_context=None):
        target = request.GET.get("next", "")
        # Only a page of this site: a link to /admin/login/?next=https://evil.example must not
        # send someone who just signed in (or already had) to another site.
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
            target = reverse("admin:index")
        if self.has_permission(request):
            return redirect(target)
        if request.user.is_authenticated and request.user.is_active and request.user.is_staff:
            step = "mfa_reauthenticate" if has_totp(request.user) else "mfa_activate_totp"
            return redirect(f"{reverse(step)}?{urlencode({'next': target})}")
        return redirect(f"{reverse('account_login')}?{urlencode({'next': target})}")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown in the admin, changed only through the portal's services (audit, e-mails, second factor)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
