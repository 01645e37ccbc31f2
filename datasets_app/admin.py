from contextlib import contextmanager

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied

from datasets_app import publishing, resource_settings
from datasets_app.models import (
    AccessQuestion, AccessRequest, AccessToken, DownloadEvent, File, Grant, License, LicenseVersion, Resource, Version,
)
from datasets_app.services import GovernanceError, license_version_publish
from datasets_app.source_roots import source_check
from portal.admin_site import ReadOnlyAdmin


@contextmanager
def refused_as_forbidden():
    """A service's refusal inside an admin save or delete: the admin's transaction rolls back and the
    page says why. Its own permission checks and the forms' validation come first, so this is met
    only where a service knows more than the admin."""
    try:
        yield
    except GovernanceError as error:
        raise PermissionDenied(str(error)) from None


class AccessQuestionInline(admin.TabularInline):
    """Saved through resource_settings.access_question_* (ResourceAdmin.save_formset)."""

    model = AccessQuestion
    extra = 0


class ResourceForm(forms.ModelForm):
    def clean(self):
        data = super().clean()
        if self.instance.pk and "license_version" in self.changed_data:
            try:  # resource_license_set checks again as it saves; here the field says why
                resource_settings.resource_license_check(resource=self.instance, license_version=data.get("license_version"))
            except GovernanceError as error:
                self.add_error("license_version", str(error))
        return data


@admin.register(Resource)
class ResourceAdmin(admin.ModelAdmin):
    """Every change goes through datasets_app.resource_settings, which checks the editor's authority
    and records it in the audit trail: settings, license (holders re-accept), reviewers, questions."""

    form = ResourceForm
    list_display = ["repo_id", "kind", "access_policy", "license_version", "default_grant_days"]
    list_filter = ["kind", "access_policy"]
    search_fields = ["namespace", "slug", "title"]
    filter_horizontal = ["reviewers"]
    inlines = [AccessQuestionInline]

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        with refused_as_forbidden():
            if not change:
                values = {name: data[name] for name in resource_settings.RESOURCE_FIELDS if name in data}
                created = resource_settings.resource_create(actor=request.user, values=values,
                                                            license_version=data.get("license_version"))
                obj.pk, obj.created_at, obj._state.adding = created.pk, created.created_at, False
                return
            changed = {name: data[name] for name in resource_settings.RESOURCE_FIELDS if name in form.changed_data}
            resource_settings.resource_update(resource=obj, actor=request.user, values=changed)
            if "license_version" in form.changed_data:
                moved = resource_settings.resource_license_set(resource=obj, actor=request.user, license_version=data["license_version"])
                if moved.license_version is not None:
                    self.message_user(request, f"{moved.repo_id} is now under {moved.license_version}; its holders are "
                                               "asked by e-mail to accept it before their next download.")

    def save_related(self, request, form, formsets, change):
        # Not form.save_m2m(): reviewers are the only many-to-many field, and they go through the service.
        with refused_as_forbidden():
            resource_settings.resource_reviewers_set(resource=form.instance, actor=request.user,
                                                     reviewers=form.cleaned_data.get("reviewers", []))
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(self, request, form, formset, change):
        # What formset.save() would leave for the admin's history message.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        with refused_as_forbidden():
            for question_form in formset.forms:
                question = question_form.instance
                if question_form in formset.deleted_forms:
                    if question.pk is not None:
                        resource_settings.access_question_remove(question=question, actor=request.user)
                        formset.deleted_objects.append(question)
                    continue
                if not question_form.has_changed():
                    continue
                data = question_form.cleaned_data
                if question.pk is None:
                    values = {name: data[name] for name in resource_settings.QUESTION_FIELDS if name in data}
                    added = resource_settings.access_question_add(resource=form.instance, actor=request.user, values=values)
                    question.pk = added.pk
                    formset.new_objects.append(added)
                else:
                    changed = [name for name in resource_settings.QUESTION_FIELDS if name in question_form.changed_data]
                    updated = resource_settings.access_question_update(
                        question=question, actor=request.user, values={name: data[name] for name in changed})
                    formset.changed_objects.append((updated, changed))

    def delete_model(self, request, obj):
        with refused_as_forbidden():
            resource_settings.resource_delete(resource=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with refused_as_forbidden():
            for resource in queryset:
                resource_settings.resource_delete(resource=resource, actor=request.user)


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
    """Title and slug through resource_settings.license_*, audited; the texts through LicenseVersionAdmin."""

    list_display = ["title", "slug"]
    inlines = [LicenseVersionInline]

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        with refused_as_forbidden():
            if not change:
                created = resource_settings.license_create(
                    actor=request.user, values={name: data[name] for name in resource_settings.LICENSE_FIELDS})
                obj.pk, obj._state.adding = created.pk, False
                return
            changed = {name: data[name] for name in resource_settings.LICENSE_FIELDS if name in form.changed_data}
            resource_settings.license_update(license=obj, actor=request.user, values=changed)

    def delete_model(self, request, obj):
        with refused_as_forbidden():
            resource_settings.license_delete(license=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with refused_as_forbidden():
            for license in queryset:
                resource_settings.license_delete(license=license, actor=request.user)


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
        if change:  # the changelog is all an existing version lets one change (get_readonly_fields)
            with refused_as_forbidden():
                if "changelog" in form.changed_data:
                    resource_settings.version_changelog_update(version=obj, actor=request.user,
                                                               changelog=form.cleaned_data["changelog"])
            return
        with refused_as_forbidden():
            queued = publishing.version_queue(resource=obj.resource, name=obj.name, source=obj.source,
                                              changelog=obj.changelog, actor=request.user)
        obj.pk, obj.status, obj.created_at, obj._state.adding = queued.pk, queued.status, queued.created_at, False
        self.message_user(request, f"Publishing {obj} from {obj.source} on a worker; refresh this page to follow it.")

    def has_delete_permission(self, request, obj=None):
        # Published versions never go (the service refuses them too); the list's bulk delete offers
        # the rest, and its confirmation page names any published one it cannot delete.
        return super().has_delete_permission(request, obj) and (obj is None or obj.published_at is None)

    def delete_model(self, request, obj):
        with refused_as_forbidden():
            resource_settings.version_delete_unpublished(version=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with refused_as_forbidden():
            for version in queryset:
                resource_settings.version_delete_unpublished(version=version, actor=request.user)


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
