from __future__ import annotations

from django import forms

from datasets_app.models import Resource
from portal.validators import validate_one_line

# Shorter excerpts match too many records to name one person's content; a record id is the way then.
EXCERPT_MIN_CHARS = 20


class TakedownForm(forms.Form):
    """The public request: which dataset, which content (one way at least), who asks and why."""

    dataset = forms.ChoiceField(label="Dataset", error_messages={
        "required": "Dataset: choose the dataset the content is in.",
        "invalid_choice": "Dataset: %(value)s is not one of our datasets; choose one from the list.",
    })
    record_id = forms.CharField(
        label="Record id", required=False, max_length=500,
        help_text="The id column of the record, if you know it (e.g. from a sample row or a shard).",
        error_messages={"max_length": "Record id: at most %(limit_value)d characters."},
    )
    url = forms.URLField(
        label="URL", required=False, max_length=2000, assume_scheme="https",
        help_text="Where the content was published originally; the custodians use it to find the records.",
        error_messages={"invalid": "URL: enter a full web address, starting with https://.",
                        "max_length": "URL: at most %(limit_value)d characters."},
    )
    excerpt = forms.CharField(
        label="Text excerpt", required=False, max_length=10000, widget=forms.Textarea(attrs={"rows": 4}),
        help_text=f"A passage copied from the content, at least {EXCERPT_MIN_CHARS} characters; "
                  "differences in spacing and line breaks do not matter.",
        error_messages={"max_length": "Text excerpt: at most %(limit_value)d characters; a distinctive passage is enough."},
    )
    contact_name = forms.CharField(label="Your name", max_length=200,
                                   error_messages={"required": "Your name: we need it to handle the request."})
    contact_email = forms.EmailField(label="Your e-mail", error_messages={
        "required": "Your e-mail: we send the acknowledgement and the decision there.",
        "invalid": "Your e-mail: enter an address like name@example.org; the decision is sent there.",
    })
    reason = forms.CharField(
        label="Reason", max_length=5000, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Why it should be removed: e.g. it is about you, it is your copyrighted work, it holds personal data.",
        error_messages={"required": "Reason: say why the content should be removed; the custodians decide on it."},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.datasets = {r.repo_id: r for r in Resource.objects.filter(kind=Resource.Kind.DATASET).order_by("namespace", "slug")}
        self.fields["dataset"].choices = [("", "—")] + [(repo_id, f"{repo_id} — {r.title}") for repo_id, r in self.datasets.items()]

    def clean_contact_name(self):
        name = self.cleaned_data["contact_name"]
        validate_one_line(name, label="Your name")
        return name

    def clean_excerpt(self):
        excerpt = self.cleaned_data["excerpt"].strip()
        if excerpt and len(" ".join(excerpt.split())) < EXCERPT_MIN_CHARS:
            raise forms.ValidationError(
                f"Text excerpt: give at least {EXCERPT_MIN_CHARS} characters, so that only the content you mean "
                "matches; for a short record, give its record id instead."
            )
        return excerpt

    def clean(self):
        data = super().clean()
        named = [data.get(name) for name in ("record_id", "url", "excerpt")]
        failed = any(name in self.errors for name in ("record_id", "url", "excerpt"))
        if not failed and not any(value and value.strip() for value in named):
            raise forms.ValidationError(
                "Identify the content: give its record id, the URL it was taken from, or an excerpt of its text "
                "(at least one of the three)."
            )
        return data

    @property
    def resource(self) -> Resource:
        return self.datasets[self.cleaned_data["dataset"]]


class TakedownAcceptForm(forms.Form):
    note = forms.CharField(
        label="Note (the requester reads it)", max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Note: say on what grounds the request is accepted; the requester reads it."},
    )


class TakedownRejectForm(forms.Form):
    reason = forms.CharField(
        label="Reason (the requester reads it)", max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Reason: say why the content stays; the requester reads it."},
    )
