from datasets_app.authz import can_download
from datasets_app.models import AccessRequest, Grant


def test_it_builds_every_role(cast):
    assert can_download(cast.granted, cast.resource_a).allowed
    assert can_download(cast.pending, cast.resource_a).code == "pending"
    assert can_download(cast.rejected, cast.resource_a).code == "rejected"
    assert cast.requests["rejected"].status == AccessRequest.Status.REJECTED
    assert can_download(cast.revoked, cast.resource_a).code == "revoked"
    assert can_download(cast.expired, cast.resource_a).code == "expired"
    assert cast.grants["expired"].status == Grant.Status.EXPIRED
    assert can_download(cast.stranger, cast.resource_a).code == "request_required"
