import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from datasets_app.authz import can_download
from datasets_app.models import AccessRequest, Grant
from datasets_app.services import GovernanceError, access_request_reject
from portal.models import AuditEvent
from tests.conftest import apply
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq

REASON = "Commercial use is outside this license; see section 2."


def test_it_rejects_with_a_reason_the_applicant_reads(cast):
    seq = last_seq()

    access_request_reject(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, reason=f"  {REASON}\n")

    decided = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    assert decided.status == AccessRequest.Status.REJECTED
    assert decided.decision_reason == REASON and decided.decided_by == cast.reviewer_a
    assert not Grant.objects.filter(user=cast.pending).exists()
    decision = can_download(cast.pending, cast.resource_a)
    assert decision.code == "rejected"
    assert decision.message == f"Your request for test/corpus-a was not approved: {REASON} You may apply again if you can address this."
    assert decision.action_url == reverse("access_request", kwargs={"namespace": "test", "slug": "corpus-a"})
    assert actions_since(seq) == ["request_rejected"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "reviewer_a" and event.data == {"user": "pending", "reason": REASON}
    assert_audit_chain_intact()


@pytest.mark.parametrize("reason", ["", "   \n"])
def test_it_refuses_to_reject_without_a_reason(cast, reason):
    seq = last_seq()

    with pytest.raises(GovernanceError, match="Give a reason for the rejection: the applicant will read it."):
        access_request_reject(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, reason=reason)

    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING
    assert actions_since(seq) == []


def test_it_tells_a_second_reviewer_the_request_was_already_rejected(cast):
    with pytest.raises(GovernanceError, match=r"already decided \(rejected\) by reviewer_a; reload the queue"):
        access_request_reject(access_request=cast.requests["rejected"], reviewer=cast.admin, reason="Also no.")

    assert AccessRequest.objects.get(pk=cast.requests["rejected"].pk).decision_reason == "Intended use is outside the license."


def test_it_lets_the_rejected_applicant_apply_again_and_be_reviewed_afresh(cast):
    again = apply(cast.rejected, cast.resource_a, intended_use="Evaluation of a research model, no redistribution.")

    assert again.pk != cast.requests["rejected"].pk and again.status == AccessRequest.Status.PENDING
    assert can_download(cast.rejected, cast.resource_a).code == "pending"
    access_request_reject(access_request=again, reviewer=cast.reviewer_a, reason="Still commercial.")
    assert can_download(cast.rejected, cast.resource_a).message.startswith("Your request for test/corpus-a was not approved: Still commercial.")


@pytest.mark.parametrize("role", ["reviewer_b", "granted", "pending", "stranger", "anonymous", "nobody"])
def test_it_refuses_a_rejection_from_anyone_but_a_reviewer_of_the_resource(cast, role):
    reviewer = {"anonymous": AnonymousUser(), "nobody": None}[role] if role in ("anonymous", "nobody") else cast.users[role]
    seq = last_seq()

    with pytest.raises(GovernanceError) as error:
        access_request_reject(access_request=cast.requests["pending"], reviewer=reviewer, reason=REASON)

    assert str(error.value) == ("Only a reviewer of test/corpus-a may reject its access requests: "
                                "ask an administrator to assign you to it.")
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING
    assert actions_since(seq) == []
