from django import forms

from portal.models import Profile
from portal.services import ONE_LINE_FIELDS
from portal.validators import normalize_orcid, validate_one_line


class OneLineNamesMixin:
    """Profile fields that go into mail subjects refuse line breaks (the profile page and the admin alike)."""

    def clean(self):
        data = super().clean()
        for name, label in ONE_LINE_FIELDS.items():
            if data.get(name):
                try:
                    validate_one_line(data[name], label=label)
                except forms.ValidationError as error:
                    self.add_error(name, error)
        return data


class ProfileForm(OneLineNamesMixin, forms.ModelForm):
    # Longer than the stored iD: people paste their ORCID URL, which clean_orcid shortens.
    orcid = forms.CharField(label="ORCID iD", required=False, max_length=64,
                            help_text="Optional, like 0000-0002-1825-0097 (your ORCID URL works too).")

    class Meta:
        model = Profile
        fields = ["full_name", "affiliation", "institutional_email", "country", "position", "orcid"]
        help_texts = {
            "institutional_email": "Your address at your institution. We send it a verification link; "
            "some releases approve verified institutional addresses automatically.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("full_name", "affiliation", "country", "position"):
            self.fields[name].required = True
            self.fields[name].error_messages["required"] = f"{self.fields[name].label}: this field is required."
        self.fields["institutional_email"].error_messages["invalid"] = "Institutional email: enter an address like name@university.edu."
        self.fields["country"].error_messages["invalid_choice"] = "Country: choose a country from the list."

    def clean_orcid(self):
        value = normalize_orcid(self.cleaned_data.get("orcid") or "")
        if value:
            # The model validator runs again on save; normalise first so URLs and lowercase x pass.
            from portal.validators import validate_orcid

            validate_orcid(value)
        return value
