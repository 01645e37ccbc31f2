from django import forms
from django.contrib import admin

from portal.admin_site import ReadOnlyAdmin
from portal.forms import OneLineNamesMixin
from portal.models import AuditEvent, Profile


class ProfileAdminForm(OneLineNamesMixin, forms.ModelForm):
    class Meta:
        model = Profile
        fields = "__all__"


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    form = ProfileAdminForm
    list_display = ["user", "full_name", "affiliation", "country", "position"]
    search_fields = ["user__username", "user__email", "full_name", "affiliation"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created_at", "action", "actor", "resource", "target_type", "target_id"]
    list_filter = ["action"]
    search_fields = ["actor", "resource", "target_id"]
