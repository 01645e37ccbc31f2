from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils import timezone
from django_countries import countries

from datasets_app.languages import config_choices, config_label
from datasets_app.models import AccessQuestion, Resource


class AccessRequestForm(forms.Form):
    """The license, the resource's own questions, and a typed signature."""

    intended_use = forms.CharField(
        label="Intended use", widget=forms.Textarea(attrs={"rows": 5}), min_length=20, max_length=5000,
        help_text="What you will do with it, for which project, and who will have access.",
        error_messages={"required": "Intended use: describe what you will do with the data.",
                        "min_length": "Intended use: give at least %(limit_value)d characters so the reviewers can decide."},
    )

    def __init__(self, *args, resource: Resource, **kwargs):
        super().__init__(*args, **kwargs)
        self.resource = resource
        self.questions = list(resource.questions.all())
        for question in self.questions:
            self.fields[f"q_{question.pk}"] = self._field_for(question)
        # Which configs (languages, sources): all unrestricted ones, or some; restricted ones by name.
        from datasets_app.authz import restricted_configs
        from datasets_app.services import resource_configs

        self.restricted = restricted_configs(resource)
        open_configs = [c for c in resource_configs(resource) if c not in self.restricted]
        if open_configs or self.restricted:
            self.fields["scope"] = forms.ChoiceField(
                label="Which parts", widget=forms.RadioSelect, initial="all", required=False,
                choices=[("all", "Every config (language) without stricter conditions"), ("some", "Only the configs I choose below")])
            self.fields["configs"] = forms.MultipleChoiceField(
                label="Configs", required=False, choices=config_choices(open_configs),
                widget=forms.SelectMultiple(attrs={"size": 10, "data-config-picker": ""}),
                help_text=f"With 'Only the configs I choose': pick among the {intcomma(len(open_configs))} configs "
                          "without stricter conditions (hold Ctrl or ⌘ to choose several).")
            if self.restricted:
                self.fields["restricted"] = forms.MultipleChoiceField(
                    label="Configs with stricter conditions (each needs the reviewers' approval)", required=False,
                    widget=forms.CheckboxSelectMultiple,
                    choices=[(name, f"{config_label(name)}: {conditions}") for name, conditions in self.restricted.items()])
        self.fields["signature"] = forms.CharField(
            label="Signature", max_length=200,
            help_text="Type your full name, as on your profile, to sign the agreement.",
            error_messages={"required": "Signature: type your full name to sign."},
        )
        self.fields["accept"] = forms.BooleanField(
            label="I have read the license above and accept its terms.",
            error_messages={"required": "Accept the license to continue."},
        )

    @staticmethod
    def _field_for(question: AccessQuestion) -> forms.Field:
        common = {"label": question.label, "help_text": question.help_text, "required": question.required,
                  "error_messages": {"required": f"{question.label}: this answer is required.",
                                     "invalid_choice": f"{question.label}: choose one of the options."}}
        if question.kind == AccessQuestion.Kind.CHECKBOX:
            return forms.BooleanField(**common)
        if question.kind == AccessQuestion.Kind.CHOICE:
            return forms.ChoiceField(choices=[("", "—")] + [(c, c) for c in question.choice_list()], **common)
        if question.kind == AccessQuestion.Kind.COUNTRY:
            return forms.ChoiceField(choices=[("", "—")] + list(countries), **common)
        return forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}), **common)

    def scope(self) -> tuple[bool, list[str]]:
        """(all_configs, configs) as the services take them."""
        data = self.cleaned_data
        all_configs = data.get("scope") != "some"  # unanswered: everything without stricter conditions
        chosen = [] if all_configs else list(data.get("configs") or [])
        return all_configs, sorted(set(chosen) | set(data.get("restricted") or []))

    def clean(self):
        data = super().clean()
        if data.get("scope") == "some" and not data.get("configs") and not data.get("restricted"):
            self.add_error("configs", "Configs: choose at least one, or ask for every config.")
        return data

    def answers(self) -> list[dict]:
        return [
            {"question_id": q.pk, "question": q.label, "kind": q.kind, "answer": self.cleaned_data.get(f"q_{q.pk}")}
            for q in self.questions
        ]


class ApproveForm(forms.Form):
    expires_on = forms.DateField(label="Access expires on", widget=forms.DateInput(attrs={"type": "date"}),
                                 error_messages={"required": "Expires on: choose a date.", "invalid": "Expires on: enter a date as YYYY-MM-DD."})
    note = forms.CharField(label="Note to the applicant (optional)", required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)

    def __init__(self, *args, asked: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if asked and len(asked) > 1:
            # Narrowing: a reviewer may approve only some of the configs asked for (a language the
            # stated use does not need, a restricted config whose conditions are not met).
            self.fields["configs"] = forms.MultipleChoiceField(
                label="Approve only these configs (optional)", required=False, choices=config_choices(asked),
                widget=forms.SelectMultiple(attrs={"size": 10, "data-config-picker": ""}),
                help_text=f"Leave empty to approve all {intcomma(len(asked))} configs asked for; hold Ctrl or ⌘ to choose several.",
                error_messages={"invalid_choice": "Configs: %(value)s is not among the configs asked for; choose from the list."})

    def narrowed_configs(self) -> list[str] | None:
        return sorted(self.cleaned_data.get("configs") or []) or None

    def clean_expires_on(self):
        day = self.cleaned_data["expires_on"]
        if day <= timezone.localdate():
            raise forms.ValidationError("Expires on: choose a date after today.")
        if day > timezone.localdate() + timedelta(days=3653):
            raise forms.ValidationError("Expires on: access cannot be granted for more than ten years.")
        return day

    def expires_at(self) -> datetime:
        from datasets_app.services import end_of_day

        return end_of_day(self.cleaned_data["expires_on"])


class ReasonForm(forms.Form):
    reason = forms.CharField(label="Reason", widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                             error_messages={"required": "Reason: say why; the applicant will read it."})

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Reason: say why; the applicant will read it.")
        return reason


class BulkForm(forms.Form):
    ACTIONS = [("approve", "Approve selected"), ("reject", "Reject selected")]
    action = forms.ChoiceField(choices=ACTIONS, error_messages={"invalid_choice": "Action: choose approve or reject."})
    requests = forms.ModelMultipleChoiceField(queryset=None, error_messages={
        "required": "Select at least one request.",
        # Another reviewer deciding a request while this page was open lands here.
        "invalid_choice": "Request %(value)s is no longer pending (another reviewer decided it) or is not yours "
                          "to review. Nothing was changed; reload the queue and select again.",
    })
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, queryset, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["requests"].queryset = queryset

    def clean(self):
        data = super().clean()
        if data.get("action") == "reject" and not (data.get("reason") or "").strip():
            self.add_error("reason", "Reason: a bulk rejection needs a reason; every applicant will read it.")
        return data
