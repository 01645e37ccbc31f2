import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from datasets_app.authz import can_download
from datasets_app.models import AccessRequest
from datasets_app.services import GovernanceError, access_request_request_changes
from tests.conftest import client_for
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, mail_to, shown_messages

MESSAGE = "Name the project and who else will handle the data."


def request_url(resource):
    return reverse("access_request", kwargs={"namespace": resource.namespace, "slug": resource.slug})


def test_it_asks_the_applicant_for_changes(cast):
    seq = last_seq()

    access_request_request_changes(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, message=MESSAGE)

    asked = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    assert asked.status == AccessRequest.Status.CHANGES_REQUESTED and asked.decision_reason == MESSAGE
    decision = can_download(cast.pending, cast.resource_a)
    assert decision.code == "changes_requested"
    assert decision.message == f"The reviewers asked for changes to your request for test/corpus-a: {MESSAGE}"
    assert decision.action_url == request_url(cast.resource_a)
    assert actions_since(seq) == ["request_changes_requested"]
    assert_audit_chain_intact()


def test_it_requires_a_message(cast):
    with pytest.raises(GovernanceError, match="Say what the applicant should change."):
        access_request_request_changes(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, message="  ")
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING


@pytest.mark.parametrize("role", ["granted", "rejected"])
def test_it_asks_changes_only_of_a_pending_request(cast, role):
    with pytest.raises(GovernanceError, match="Changes can only be asked of a pending request."):
        access_request_request_changes(access_request=cast.requests[role], reviewer=cast.admin, message=MESSAGE)


def test_it_lets_the_applicant_update_the_same_request(client, cast, send_mail_on_commit, mailoutbox):
    access_request_request_changes(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, message=MESSAGE)
    client_for(client, cast, "pending")
    assert "Update request" in client.get(reverse("my_access")).content.decode()
    form_page = client.get(request_url(cast.resource_a)).content.decode()
    assert "The reviewers asked for changes:" in form_page and MESSAGE in form_page
    assert "Training multilingual evaluation baselines" in form_page  # the earlier answer, to edit
    sector = cast.resource_a.questions.get()
    seq = last_seq()

    with send_mail_on_commit():
        response = client.post(request_url(cast.resource_a), {
            "intended_use": "Project LRL-Eval; only the two of us at Example University handle the data.",
            f"q_{sector.pk}": "Academia", "signature": "Pending", "accept": "on",
        })

    assert response.status_code == 302
    assert "Your request for test/corpus-a was sent to the reviewers." in shown_messages(response)
    updated = AccessRequest.objects.get(user=cast.pending, resource=cast.resource_a)
    assert updated.pk == cast.requests["pending"].pk
    assert updated.status == AccessRequest.Status.PENDING
    assert updated.intended_use.startswith("Project LRL-Eval")
    assert can_download(cast.pending, cast.resource_a).code == "pending"
    assert actions_since(seq) == ["request_resubmitted", "license_accepted"]
    assert len(mail_to(mailoutbox, "reviewer_a@example.org")) == 1
    assert_audit_chain_intact()


@pytest.mark.parametrize("role", ["reviewer_b", "granted", "pending", "stranger", "anonymous", "nobody"])
def test_it_refuses_to_ask_for_changes_for_anyone_but_a_reviewer_of_the_resource(cast, role):
    reviewer = {"anonymous": AnonymousUser(), "nobody": None}[role] if role in ("anonymous", "nobody") else cast.users[role]
    seq = last_seq()

    with pytest.raises(GovernanceError) as error:
        access_request_request_changes(access_request=cast.requests["pending"], reviewer=reviewer, message=MESSAGE)

    assert str(error.value) == ("Only a reviewer of test/corpus-a may ask for changes to its access requests: "
                                "ask an administrator to assign you to it.")
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING
    assert can_download(cast.pending, cast.resource_a).code == "pending" and actions_since(seq) == []
