"""The custodian's side of shard builds, in the admin (staff with a second factor):
queue a build, follow it live (progress bar, log, rejects, error), cancel it."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from datasets_app import builds, resource_settings
from datasets_app.admin import refused_as_forbidden  # datasets_app.admin imports this module last, after defining it
from datasets_app.formats import SOURCE_FORMATS
from datasets_app.models import Build, Exclusion, Resource, RestrictedConfig
from datasets_app.services import GovernanceError


class BuildForm(forms.ModelForm):
    resource = forms.ModelChoiceField(queryset=Resource.objects.filter(kind=Resource.Kind.DATASET))
    version_name = forms.CharField(max_length=64, help_text="e.g. v2.0; the version stays invisible until the build is published.")
    source_paths = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Sources",
                                   help_text="One per line: a JSONL (.gz too), Parquet, CSV or text file or folder the workers can read, or s3://bucket/prefix.")
    format = forms.ChoiceField(choices=[(f, f) for f in SOURCE_FORMATS], initial="auto")
    text_column = forms.CharField(initial="text")
    id_column = forms.CharField(required=False)
    language_column = forms.CharField(required=False)
    default_language = forms.CharField(required=False, help_text="For records without a language.")
    shard_size = forms.CharField(initial="256MiB")
    on_error = forms.ChoiceField(choices=[("fail", "fail: stop at the first bad record"), ("skip", "skip: count, sample and drop bad records")])
    dedup = forms.BooleanField(required=False, label="Drop exact duplicates")
    scrub_pii = forms.BooleanField(required=False, label="Replace e-mail addresses and phone numbers")
    changelog = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    class Meta:
        model = Build
        fields = []

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        sources = [{"uri": line.strip(), "format": data["format"], "text_column": data["text_column"],
                    "id_column": data["id_column"] or None, "language_column": data["language_column"] or None}
                   for line in data["source_paths"].splitlines() if line.strip()]
        params = {"shard_size": data["shard_size"], "on_error": data["on_error"], "dedup": data["dedup"],
                  "scrub_pii": data["scrub_pii"], "default_language": data["default_language"] or None}
        try:  # the same checks build_create makes, shown on the form
            builds.build_validate(sources=sources, params=params)
        except GovernanceError as error:
            raise forms.ValidationError(str(error)) from None
        self.build_args = {"resource": data["resource"], "name": data["version_name"].strip(), "sources": sources,
                           "params": params, "changelog": data["changelog"]}
        return data


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    list_display = ["version", "status", "progress", "attempt", "claimed_by", "heartbeat_at", "created_at"]
    list_filter = ["status"]
    change_form_template = "admin/datasets_app/build/change_form.html"

    @admin.display(description="progress")
    def progress(self, obj: Build) -> str:
        return f"{obj.percent}%"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            return BuildForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(BuildForm.base_fields)
        return ["version", "status", "attempt", "claimed_by", "heartbeat_at", "sources", "params", "created_by", "created_at", "finished_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            build = builds.build_create(actor=request.user, **form.build_args)
        except GovernanceError as error:
            form.add_error(None, str(error))
            raise _Refused(str(error)) from None
        obj.pk, obj.version, obj.status = build.pk, build.version, build.status  # for the admin's log entry

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except _Refused as error:
            self.message_user(request, f"{error} Nothing was queued.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:datasets_app_build_add"))

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(request, "Build queued: this page follows it as a worker runs it.")
        return HttpResponseRedirect(reverse("admin:datasets_app_build_change", args=[obj.pk]))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/progress.json", wrap(self.progress_view), name="datasets_app_build_progress"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name="datasets_app_build_cancel"),
        ] + super().get_urls()

    # admin_view lets in any staff member; these views answer to the build permissions as the
    # admin's own pages do (the log and rejected records quote the sources).
    def progress_view(self, request, object_id):
        build = get_object_or_404(Build, pk=object_id)
        if not self.has_view_or_change_permission(request, build):
            raise PermissionDenied("Following a build needs the permission to view builds.")
        return JsonResponse(build_state(build))

    def cancel_view(self, request, object_id):
        build = get_object_or_404(Build, pk=object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request, build):
            raise PermissionDenied("Cancelling a build needs the permission to change builds.")
        try:
            builds.build_cancel(build=build, actor=request.user)
            self.message_user(request, "Cancelled: the worker stops at its next progress report and keeps nothing.")
        except GovernanceError as error:
            self.message_user(request, str(error), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:datasets_app_build_change", args=[build.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        build = get_object_or_404(Build, pk=object_id)
        extra = {"build": build, "state": build_state(build), "may_cancel": self.has_change_permission(request, build),
                 **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)


class _Refused(Exception):
    pass


def build_state(build: Build) -> dict:
    return {
        "status": build.status, "status_label": build.get_status_display(), "percent": build.percent, "phase": build.phase,
        "records_read": build.records_read, "bytes_read": build.bytes_read, "bytes_total": build.bytes_total,
        "records_written": build.records_written, "configs_written": build.configs_written, "configs_total": build.configs_total,
        "attempt": build.attempt, "log": build.log, "error": build.error, "active": build.is_active,
        "rejects": build.result.get("rejects", 0), "reject_sample": build.result.get("reject_sample", [])[:50],
    }


@admin.register(Exclusion)
class ExclusionAdmin(admin.ModelAdmin):
    """The takedown list: builds drop these records by id, by the sha256 of their normalised text, or by
    the URL of the page they were taken from (in sources that keep a url column)."""

    list_display = ["resource", "record_id", "text_sha256", "url", "created_at", "created_by"]
    list_filter = ["resource"]
    search_fields = ["record_id", "text_sha256", "url", "note"]
    fields = ["resource", "record_id", "text_sha256", "url", "note"]

    def get_readonly_fields(self, request, obj=None):
        # An exclusion is added or removed, never rewritten: each is one audited decision.
        return self.fields if obj is not None else []

    def save_model(self, request, obj, form, change):
        if change:
            return
        with refused_as_forbidden():
            added = resource_settings.exclusion_add(actor=request.user, **{name: form.cleaned_data[name] for name in self.fields})
        obj.pk, obj.created_by, obj.created_at, obj._state.adding = added.pk, added.created_by, added.created_at, False

    def delete_model(self, request, obj):
        with refused_as_forbidden():
            resource_settings.exclusion_remove(exclusion=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with refused_as_forbidden():
            for exclusion in queryset.select_related("resource"):
                resource_settings.exclusion_remove(exclusion=exclusion, actor=request.user)


@admin.register(RestrictedConfig)
class RestrictedConfigAdmin(admin.ModelAdmin):
    """Configs with stricter conditions: grants reach them only by name, after a reviewer approves."""

    list_display = ["resource", "name", "conditions"]
    list_filter = ["resource"]

    def get_readonly_fields(self, request, obj=None):
        return ["resource"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        with refused_as_forbidden():
            if change:
                resource_settings.restricted_config_update(restricted_config=obj, actor=request.user, name=data["name"],
                                                           conditions=data["conditions"])
                return
            added = resource_settings.restricted_config_add(resource=data["resource"], actor=request.user, name=data["name"],
                                                            conditions=data["conditions"])
        obj.pk, obj._state.adding = added.pk, False

    def delete_model(self, request, obj):
        with refused_as_forbidden():
            resource_settings.restricted_config_remove(restricted_config=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with refused_as_forbidden():
            for restricted_config in queryset.select_related("resource"):
                resource_settings.restricted_config_remove(restricted_config=restricted_config, actor=request.user)
