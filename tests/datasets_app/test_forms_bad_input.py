"""Every form refuses bad input with a message that names the field to fix."""

from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone

from datasets_app.forms import AccessRequestForm, ApproveForm, BulkForm, ReasonForm
from datasets_app.models import AccessQuestion, AccessRequest
from datasets_app.services import GovernanceError
from portal.forms import ProfileForm
from portal.services import profile_update
from tests.conftest import client_for

PROFILE = {"full_name": "Ada Lovelace", "affiliation": "Analytical Society", "institutional_email": "",
           "country": "GB", "position": "Researcher", "orcid": ""}


# --- Profile ------------------------------------------------------------------------------


@pytest.mark.parametrize("orcid, stored", [
    ("0000-0002-1825-0097", "0000-0002-1825-0097"),
    ("https://orcid.org/0000-0002-1825-0097", "0000-0002-1825-0097"),
    ("0000-0002-1694-233x", "0000-0002-1694-233X"),
    ("", ""),
])
def test_it_accepts_a_valid_orcid_in_the_forms_people_paste(db, orcid, stored):
    form = ProfileForm(data={**PROFILE, "orcid": orcid})

    assert form.is_valid(), form.errors
    assert form.cleaned_data["orcid"] == stored


@pytest.mark.parametrize("orcid, message", [
    ("0000-0002-1825-0098", "This ORCID iD's check digit is wrong: copy it again from your ORCID record."),
    ("0000-0002-1825", "Enter an ORCID iD as four groups of four characters, like 0000-0002-1825-0097."),
    ("0000-0002-1825-009Y", "Enter an ORCID iD as four groups of four characters, like 0000-0002-1825-0097."),
])
def test_it_refuses_a_wrong_orcid(db, orcid, message):
    form = ProfileForm(data={**PROFILE, "orcid": orcid})

    assert not form.is_valid()
    assert form.errors == {"orcid": [message]}


@pytest.mark.parametrize("field, value, message", [
    ("full_name", "", "Full name: this field is required."),
    ("affiliation", " ", "Affiliation: this field is required."),
    ("country", "", "Country: this field is required."),
    ("country", "XX", "Country: choose a country from the list."),
    ("position", "", "Position: this field is required."),
    ("institutional_email", "ada@", "Institutional email: enter an address like name@university.edu."),
    # Names go into mail subjects: a line break there is a header of the writer's choosing, and a lost message.
    ("full_name", "Ada Lovelace\nBcc: everyone@example.net", "Full name: write it on one line, without line breaks, "
     "tabs or other control characters (found U+000A); it is used in e-mails."),
    ("affiliation", "Analytical\rSociety", "Affiliation: write it on one line, without line breaks, "
     "tabs or other control characters (found U+000D); it is used in e-mails."),
    ("position", "Chair\u2028of nothing", "Position: write it on one line, without line breaks, "
     "tabs or other control characters (found U+2028); it is used in e-mails."),
])
def test_it_refuses_an_incomplete_or_invalid_profile(db, field, value, message):
    form = ProfileForm(data={**PROFILE, field: value})

    assert not form.is_valid()
    assert form.errors == {field: [message]}


def test_it_shows_the_orcid_error_on_the_profile_page_and_saves_nothing(client, cast):
    response = client_for(client, cast, "stranger").post(reverse("profile"), {**PROFILE, "orcid": "0000-0002-1825-0098"})

    assert response.status_code == 200
    assert "This ORCID iD&#x27;s check digit is wrong" in response.content.decode()
    cast.stranger.profile.refresh_from_db()
    assert cast.stranger.profile.orcid == "" and cast.stranger.profile.full_name == "Stranger"


def test_it_refuses_a_line_break_in_the_full_name_on_the_page_and_in_the_service(client, cast):
    response = client_for(client, cast, "stranger").post(reverse("profile"), {**PROFILE, "full_name": "Ada\nLovelace"})

    assert response.status_code == 200
    assert "Full name: write it on one line" in response.content.decode()
    with pytest.raises(GovernanceError, match="Full name: write it on one line"):
        profile_update(profile=cast.stranger.profile, changes={"full_name": "Ada\r\nLovelace"})
    cast.stranger.profile.refresh_from_db()
    assert cast.stranger.profile.full_name == "Stranger"


def test_it_refuses_a_line_break_in_a_full_name_set_in_the_admin(client, cast):
    profile = cast.stranger.profile
    data = {name: ("" if value is None else str(value)) for name, value in model_to_dict(profile).items()}

    response = client_for(client, cast, "admin").post(
        reverse("admin:portal_profile_change", args=[profile.pk]), {**data, "full_name": "Sly\nBcc: everyone@example.net"})

    assert response.status_code == 200
    assert "Full name: write it on one line" in response.content.decode()
    profile.refresh_from_db()
    assert profile.full_name == "Stranger"


def test_it_saves_a_pasted_orcid_url_from_the_profile_page(client, cast):
    response = client_for(client, cast, "stranger").post(reverse("profile"), {**PROFILE, "orcid": "https://orcid.org/0000-0002-1825-0097"})

    assert response.status_code == 302
    cast.stranger.profile.refresh_from_db()
    assert cast.stranger.profile.orcid == "0000-0002-1825-0097"


# --- Access request ---------------------------------------------------------------------------


@pytest.fixture
def questions(cast):
    resource = cast.resource_a
    return {
        "sector": resource.questions.get(label="Sector"),
        "consent": AccessQuestion.objects.create(resource=resource, label="I will not try to re-identify anyone",
                                                 kind=AccessQuestion.Kind.CHECKBOX, position=2),
        "country": AccessQuestion.objects.create(resource=resource, label="Country of the project",
                                                 kind=AccessQuestion.Kind.COUNTRY, position=3),
        "funding": AccessQuestion.objects.create(resource=resource, label="Funding body", required=False, position=4),
    }


def valid_request(questions, **overrides):
    data = {"intended_use": "Evaluating a multilingual tokenizer on Basque and Catalan.",
            f"q_{questions['sector'].pk}": "Academia", f"q_{questions['consent'].pk}": "on",
            f"q_{questions['country'].pk}": "ES", "signature": "Stranger", "accept": "on"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_it_accepts_a_complete_request_with_optional_answers_left_blank(cast, questions):
    form = AccessRequestForm(data=valid_request(questions), resource=cast.resource_a)

    assert form.is_valid(), form.errors
    assert [a["answer"] for a in form.answers()] == ["Academia", True, "ES", ""]


@pytest.mark.parametrize("field, value, message", [
    ("intended_use", None, "Intended use: describe what you will do with the data."),
    ("intended_use", "For research.", "Intended use: give at least 20 characters so the reviewers can decide."),
    ("signature", "", "Signature: type your full name to sign."),
    ("accept", None, "Accept the license to continue."),
    ("sector", "", "Sector: this answer is required."),
    ("sector", "Government", "Sector: choose one of the options."),
    ("consent", None, "I will not try to re-identify anyone: this answer is required."),
    ("country", "Atlantis", "Country of the project: choose one of the options."),
])
def test_it_refuses_an_incomplete_or_invalid_request(cast, questions, field, value, message):
    key = f"q_{questions[field].pk}" if field in questions else field

    form = AccessRequestForm(data=valid_request(questions, **{key: value}), resource=cast.resource_a)

    assert not form.is_valid()
    assert form.errors == {key: [message]}


def test_it_shows_every_problem_on_the_request_page_and_records_nothing(client, cast, questions):
    data = valid_request(questions, intended_use="Short.", signature="Someone Else", accept=None,
                         **{f"q_{questions['sector'].pk}": "Government"})

    response = client_for(client, cast, "stranger").post(
        reverse("access_request", kwargs={"namespace": "test", "slug": "corpus-a"}), data)

    assert response.status_code == 200
    page = response.content.decode()
    for message in ("Intended use: give at least 20 characters", "Sector: choose one of the options.", "Accept the license to continue."):
        assert message in page
    assert not AccessRequest.objects.filter(user=cast.stranger).exists()


def test_it_refuses_a_signature_that_does_not_match_the_profile(client, cast, questions):
    response = client_for(client, cast, "stranger").post(
        reverse("access_request", kwargs={"namespace": "test", "slug": "corpus-a"}), valid_request(questions, signature="S. Trange"))

    assert response.context["form"].errors == {"signature": ["Sign with your full name exactly as on your profile: Stranger."]}


# --- Review -------------------------------------------------------------------------------------


@pytest.mark.parametrize("expires_on, message", [
    ("", "Expires on: choose a date."),
    ("next week", "Expires on: enter a date as YYYY-MM-DD."),
    ((timezone.localdate() - timedelta(days=1)).isoformat(), "Expires on: choose a date after today."),
    (timezone.localdate().isoformat(), "Expires on: choose a date after today."),
    ((timezone.localdate() + timedelta(days=3700)).isoformat(), "Expires on: access cannot be granted for more than ten years."),
])
def test_it_refuses_an_approval_without_a_sensible_expiry(expires_on, message):
    form = ApproveForm(data={"expires_on": expires_on})

    assert not form.is_valid()
    assert form.errors == {"expires_on": [message]}


def test_it_accepts_an_approval_that_ends_tomorrow():
    assert ApproveForm(data={"expires_on": (timezone.localdate() + timedelta(days=1)).isoformat()}).is_valid()


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_it_refuses_a_rejection_or_revocation_without_a_reason(reason):
    form = ReasonForm(data={"reason": reason})

    assert not form.is_valid()
    assert form.errors == {"reason": ["Reason: say why; the applicant will read it."]}


def test_it_refuses_a_bulk_rejection_without_a_reason(cast):
    form = BulkForm(data={"action": "reject", "requests": [cast.requests["pending"].pk], "reason": " "},
                    queryset=AccessRequest.objects.filter(status="pending"))

    assert not form.is_valid()
    assert form.errors == {"reason": ["Reason: a bulk rejection needs a reason; every applicant will read it."]}


@pytest.mark.parametrize("data, errors", [
    ({"action": "approve"}, {"requests": ["Select at least one request."]}),
    ({"action": "delete", "requests": ["PENDING"]}, {"action": ["Action: choose approve or reject."]}),
])
def test_it_refuses_a_bulk_decision_without_a_selection_or_action(cast, data, errors):
    data = {k: [cast.requests["pending"].pk] if v == ["PENDING"] else v for k, v in data.items()}
    form = BulkForm(data=data, queryset=AccessRequest.objects.filter(status="pending"))

    assert not form.is_valid()
    assert form.errors == errors


def test_it_refuses_a_bulk_selection_that_is_no_longer_pending(cast):
    decided = cast.requests["rejected"]
    form = BulkForm(data={"action": "approve", "requests": [decided.pk]}, queryset=AccessRequest.objects.filter(status="pending"))

    assert not form.is_valid()
    assert form.errors["requests"][0].startswith(f"Request {decided.pk} is no longer pending")
