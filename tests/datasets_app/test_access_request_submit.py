import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from datasets_app.authz import can_download
from datasets_app.models import AccessRequest, Resource
from datasets_app.services import GovernanceError, access_request_submit
from tests.conftest import LICENSE_TEXT, apply, client_for, make_user
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, shown_messages

INTENDED_USE = "Benchmarking tokenisers on Breton and Occitan for a thesis chapter."


def request_url(resource):
    return reverse("access_request", kwargs={"namespace": resource.namespace, "slug": resource.slug})


def form_data(cast, user, **overrides):
    sector = cast.resource_a.questions.get(label="Sector")
    data = {"intended_use": INTENDED_USE, f"q_{sector.pk}": "Academia", "signature": user.profile.full_name, "accept": "on"}
    data.update(overrides)
    return data


def test_it_shows_the_license_text_its_digest_and_the_questions(client, cast):
    response = client_for(client, cast, "stranger").get(request_url(cast.resource_a))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Test Data License v1.0" in page
    assert LICENSE_TEXT.splitlines()[0] in page
    assert cast.license_version.sha256 in page
    assert "Sector" in page and "Academia" in page and "Industry" in page
    assert "Sign and request access" in page


def test_it_records_the_request_with_the_license_signed_and_the_answers(client, cast):
    client_for(client, cast, "stranger")
    seq = last_seq()
    response = client.post(request_url(cast.resource_a), form_data(cast, cast.stranger), HTTP_USER_AGENT="pytest-browser/1.0")

    assert response.status_code == 302 and response.url == reverse("my_access")
    assert "Your request for test/corpus-a was sent to the reviewers." in shown_messages(response)
    submitted = AccessRequest.objects.get(user=cast.stranger, resource=cast.resource_a)
    assert submitted.status == AccessRequest.Status.PENDING
    assert submitted.intended_use == INTENDED_USE
    assert submitted.signature == "Stranger"
    assert submitted.license_version == cast.license_version
    assert submitted.license_sha256 == cast.license_version.sha256
    assert submitted.answers == [{"question_id": cast.resource_a.questions.get().pk, "question": "Sector", "kind": "choice", "answer": "Academia"}]
    assert submitted.ip == "127.0.0.1"
    assert submitted.user_agent == "pytest-browser/1.0"
    assert can_download(cast.stranger, cast.resource_a).code == "pending"
    assert actions_since(seq) == ["request_submitted", "license_accepted"]
    assert_audit_chain_intact()


def test_it_lists_the_request_on_my_access(client, cast):
    apply(cast.stranger, cast.resource_a)

    page = client_for(client, cast, "stranger").get(reverse("my_access")).content.decode()

    assert "test/corpus-a" in page and "Pending review" in page


def test_it_does_not_open_two_requests_when_the_form_is_sent_twice(client, cast):
    client_for(client, cast, "stranger")
    client.post(request_url(cast.resource_a), form_data(cast, cast.stranger))
    seq = last_seq()

    again = client.post(request_url(cast.resource_a), form_data(cast, cast.stranger))

    assert again.status_code == 302 and again.url == reverse("my_access")
    assert "Your request for test/corpus-a is already waiting for review." in shown_messages(again)
    assert AccessRequest.objects.filter(user=cast.stranger, resource=cast.resource_a).count() == 1
    assert actions_since(seq) == []


def test_it_returns_the_pending_request_when_the_service_is_called_twice(cast):
    first, created = access_request_submit(user=cast.stranger, resource=cast.resource_a, intended_use=INTENDED_USE, answers=[], signature="Stranger")
    second, created_again = access_request_submit(user=cast.stranger, resource=cast.resource_a, intended_use="Something else entirely, longer.", answers=[], signature="Stranger")

    assert created and not created_again
    assert second.pk == first.pk
    assert second.intended_use == INTENDED_USE
    assert AccessRequest.objects.filter(user=cast.stranger, resource=cast.resource_a).count() == 1


@pytest.mark.parametrize("status", [AccessRequest.Status.PENDING, AccessRequest.Status.CHANGES_REQUESTED])
def test_it_refuses_a_second_open_request_in_the_database_even_without_the_service(cast, status):
    AccessRequest.objects.filter(pk=cast.requests["pending"].pk).update(status=status)

    with pytest.raises(IntegrityError), transaction.atomic():
        AccessRequest.objects.create(
            user=cast.pending, resource=cast.resource_a, intended_use=INTENDED_USE, signature="Pending",
            license_version=cast.license_version, license_sha256=cast.license_version.sha256,
        )
    assert AccessRequest.objects.filter(user=cast.pending, resource=cast.resource_a).count() == 1


def test_it_allows_an_open_request_next_to_decided_ones_in_the_database(cast):
    # The constraint is partial: history (rejected, approved) never blocks a new application.
    AccessRequest.objects.create(
        user=cast.rejected, resource=cast.resource_a, intended_use=INTENDED_USE, signature="Rejected",
        license_version=cast.license_version, license_sha256=cast.license_version.sha256,
    )
    assert AccessRequest.objects.filter(user=cast.rejected, resource=cast.resource_a).count() == 2


def test_it_lets_a_rejected_applicant_apply_again(client, cast):
    client_for(client, cast, "rejected")
    assert client.get(request_url(cast.resource_a)).status_code == 200

    response = client.post(request_url(cast.resource_a), form_data(cast, cast.rejected, intended_use="Evaluation only, no redistribution of any text."))

    assert response.status_code == 302
    statuses = list(AccessRequest.objects.filter(user=cast.rejected, resource=cast.resource_a).order_by("submitted_at").values_list("status", flat=True))
    assert statuses == [AccessRequest.Status.REJECTED, AccessRequest.Status.PENDING]
    assert can_download(cast.rejected, cast.resource_a).code == "pending"
    page = client.get(reverse("my_access")).content.decode()
    assert "Intended use is outside the license." in page and "Pending review" in page


def test_it_lets_a_holder_ask_for_renewal(client, cast):
    page = client_for(client, cast, "granted").get(request_url(cast.resource_a)).content.decode()

    assert "You have access until" in page and "asks for a renewal" in page


def test_it_sends_a_pending_applicant_to_my_access_instead_of_a_second_form(client, cast):
    response = client_for(client, cast, "pending").get(request_url(cast.resource_a))

    assert response.status_code == 302 and response.url == reverse("my_access")
    assert "Your request for test/corpus-a is already waiting for review." in shown_messages(response)


def test_it_asks_for_a_complete_profile_first(client, cast):
    newcomer, _ = make_user("newcomer")
    newcomer.profile.affiliation = ""
    newcomer.profile.save()
    client.force_login(newcomer)

    response = client.post(request_url(cast.resource_a), form_data(cast, newcomer))

    assert response.status_code == 302
    assert response.url == f"{reverse('profile')}?next={request_url(cast.resource_a)}"
    assert "Complete your profile (name, affiliation, country, position) before requesting access." in shown_messages(response)
    assert not AccessRequest.objects.filter(user=newcomer).exists()


def test_it_sends_anonymous_visitors_to_sign_in(client, cast):
    response = client.get(request_url(cast.resource_a))

    assert response.status_code == 302 and response.url.startswith(reverse("account_login"))


def test_it_says_an_open_resource_needs_no_request(client, cast):
    response = client_for(client, cast, "stranger").get(request_url(cast.open_resource))

    assert response.status_code == 302 and response.url == cast.open_resource.get_absolute_url()
    assert "test/tokenizer needs no request." in shown_messages(response)


def test_it_closes_requests_while_no_license_is_published(client, cast):
    unlicensed = Resource.objects.create(namespace="test", slug="draft", kind=Resource.Kind.DATASET, title="Draft")

    response = client_for(client, cast, "stranger").get(request_url(unlicensed))

    assert response.status_code == 302
    assert "test/draft has no published license yet, so requests are closed. Please check back later." in shown_messages(response)
    with pytest.raises(GovernanceError, match="no published license yet"):
        access_request_submit(user=cast.stranger, resource=unlicensed, intended_use=INTENDED_USE, answers=[], signature="Stranger")


def test_it_refuses_a_signature_that_is_not_the_name_on_the_profile(client, cast):
    response = client_for(client, cast, "stranger").post(request_url(cast.resource_a), form_data(cast, cast.stranger, signature="Somebody Else"))

    assert response.status_code == 200
    assert response.context["form"].errors["signature"] == ["Sign with your full name exactly as on your profile: Stranger."]
    assert "Sign with your full name exactly as on your profile: Stranger." in response.content.decode()
    assert not AccessRequest.objects.filter(user=cast.stranger).exists()


def test_it_accepts_a_signature_that_differs_only_in_case_and_spacing(cast):
    submitted, created = access_request_submit(user=cast.stranger, resource=cast.resource_a, intended_use=INTENDED_USE, answers=[], signature="  stranger ")

    assert created and submitted.signature == "stranger"


def test_it_refuses_a_blank_intended_use_in_the_service_too(cast):
    with pytest.raises(GovernanceError, match="Describe your intended use"):
        access_request_submit(user=cast.stranger, resource=cast.resource_a, intended_use="   ", answers=[], signature="Stranger")
    assert not AccessRequest.objects.filter(user=cast.stranger).exists()


def test_it_refuses_an_applicant_without_a_full_name(cast):
    cast.stranger.profile.full_name = ""
    cast.stranger.profile.save()

    with pytest.raises(GovernanceError, match="Fill in your full name on your profile"):
        access_request_submit(user=cast.stranger, resource=cast.resource_a, intended_use=INTENDED_USE, answers=[], signature="")


def test_it_stamps_the_submission_time(cast):
    before = timezone.now()
    submitted = apply(cast.stranger, cast.resource_b)

    assert before <= submitted.submitted_at <= timezone.now()
