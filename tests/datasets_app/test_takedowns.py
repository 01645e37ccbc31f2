"""Takedowns: the public form, finding the content in built versions, deciding, flagging, rebuilding."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from datasets_app import takedowns
from datasets_app.authz import CommandLineOperator
from datasets_app.models import Exclusion, Takedown, Version
from datasets_app.services import GovernanceError, access_request_approve
from datasets_app.shards import text_sha256
from datasets_app.takedown_views import RATE_LIMIT
from datasets_app.takedowns import (
    takedown_accept,
    takedown_reject,
    takedown_submit,
    versions_containing,
)
from portal.mail_limits import PER_RECIPIENT
from portal.models import AuditEvent
from tests.conftest import apply, client_for, make_user
from tests.datasets_app.conftest import (
    actions_since,
    assert_audit_chain_intact,
    last_seq,
    mail_to,
    shown_messages,
)
from tests.datasets_app.test_builds import build_command, shard_rows, udhr_sample

FORM = reverse("takedown_form")
QUEUE = reverse("takedown_queue")
LANGUAGES = ("fr", "en", "ar")



def form_data(**overrides) -> dict:
    data = {"dataset": "test/corpus-a", "record_id": "udhr_fra/1", "url": "", "excerpt": "",
            "contact_name": "Jo Doe", "contact_email": "jo@example.net",
            "reason": "This paragraph quotes a private letter of mine."}
    return {**data, **overrides}


def submit(resource, **fields) -> Takedown:
    values = {"record_id": "", "url": "", "excerpt": "", "contact_name": "Jo Doe", "contact_email": "jo@example.net",
              "reason": "It quotes a private letter of mine.", "ip": "192.0.2.7", **fields}
    return takedown_submit(resource=resource, **values)


def received_before_the_url_rule(resource, url: str) -> Takedown:
    """A URL-only request received before takedown_submit refused those no version can look up."""
    return Takedown.objects.create(resource=resource, url=url, contact_name="Jo Doe", contact_email="jo@example.net",
                                   reason="It quotes a private letter of mine.")


def detail_url(takedown) -> str:
    return reverse("takedown_detail", kwargs={"pk": takedown.pk})


@pytest.fixture
def built(cast, release_storage, tmp_path, settings):
    """Version v1 of resource A built from the real UDHR corpus (three languages), and its rows."""
    # Build ids restart in each test database: a shared work folder would collide with other runs.
    settings.BUILD_WORK_DIR = str(tmp_path / "builds")
    source, rows = udhr_sample(tmp_path, languages=LANGUAGES)
    build_command("test/corpus-a", "v1", source, id_column="id", language_column="lang", shard_size="64KiB")
    return Version.objects.get(resource=cast.resource_a, name="v1"), source, rows


@pytest.fixture
def second_holder(cast):
    """Another researcher with an active grant on resource A."""
    user, _ = make_user("holder_two")
    access_request_approve(access_request=apply(user, cast.resource_a), reviewer=cast.reviewer_a,
                           expires_at=timezone.now() + timedelta(days=90))
    return user


# --- The public form -------------------------------------------------------------------------------


def test_it_receives_a_request_from_an_anonymous_visitor_and_tells_the_custodians_and_the_requester(
        client, cast, send_mail_on_commit, mailoutbox):
    seq = last_seq()

    with send_mail_on_commit():
        response = client.post(FORM, form_data(url="https://blog.example.net/letter"), REMOTE_ADDR="192.0.2.7")

    assert response.status_code == 302 and response["Location"] == reverse("takedown_received")
    takedown = Takedown.objects.get()
    assert (takedown.resource, takedown.record_id, takedown.status, takedown.ip) == (cast.resource_a, "udhr_fra/1", "received", "192.0.2.7")
    page = client.get(response["Location"]).content.decode()
    assert f"#{takedown.pk}" in page and "test/corpus-a" in page
    assert actions_since(seq) == ["takedown_received"]
    assert {a for m in mailoutbox for a in m.to} == {"reviewer_a@example.org", "jo@example.net"}
    [to_custodian] = mail_to(mailoutbox, "reviewer_a@example.org")
    assert f"Takedown request #{takedown.pk} for test/corpus-a" in to_custodian.subject
    assert "http://127.0.0.1:8000" + detail_url(takedown) in to_custodian.body
    assert "https://blog.example.net/letter" in to_custodian.body and takedown.reason in to_custodian.body
    [ack] = mail_to(mailoutbox, "jo@example.net")
    assert f"#{takedown.pk}" in ack.subject and f"#{takedown.pk}" in ack.body and "test/corpus-a" in ack.body
    assert_audit_chain_intact()


def test_it_acknowledges_a_request_without_repeating_a_word_the_visitor_wrote(client, cast, send_mail_on_commit, mailoutbox):
    # The contact address is whatever the visitor typed: the form must not carry their message to it.
    typed = {"contact_name": "Claim your prize at prize.example", "record_id": "Call 555-0100 now",
             "url": "https://prize.example/claim", "excerpt": "You have won a prize: reply with your bank details",
             "reason": "Visit prize.example to collect your winnings today"}
    with send_mail_on_commit():
        response = client.post(FORM, form_data(**typed, contact_email="someone@victim.example"))

    assert response.status_code == 302
    [ack] = mail_to(mailoutbox, "someone@victim.example")
    for text in (ack.subject, ack.body):
        assert "prize" not in text and "555-0100" not in text and "bank" not in text
    assert "If you did not send this request, you can ignore this message." in ack.body
    [to_custodian] = mail_to(mailoutbox, "reviewer_a@example.org")
    assert typed["excerpt"] in to_custodian.body  # the custodians still read all of it


def test_it_limits_acknowledgments_per_recipient_and_keeps_what_was_typed(client, cast, send_mail_on_commit, mailoutbox):
    for attempt in range(PER_RECIPIENT.amount):
        with send_mail_on_commit():
            response = client.post(FORM, form_data(contact_email="target@victim.example"), REMOTE_ADDR=f"192.0.2.{attempt + 1}")
        assert response.status_code == 302

    refused = client.post(FORM, form_data(contact_email="target@victim.example", reason="One more, please."),
                          REMOTE_ADDR="198.51.100.4")

    assert refused.status_code == 429
    page = refused.content.decode()
    assert f"We have sent target@victim.example {PER_RECIPIENT.amount} e-mails in the last 24 hours" in page
    assert "Try again after " in page and "or give another address" in page and "One more, please." in page
    assert Takedown.objects.count() == PER_RECIPIENT.amount
    assert len(mail_to(mailoutbox, "target@victim.example")) == PER_RECIPIENT.amount
    assert client.post(FORM, form_data(contact_email="jo@example.net"), REMOTE_ADDR="198.51.100.4").status_code == 302


def test_it_refuses_a_line_break_in_the_requesters_name_on_the_form_and_in_the_service(client, cast):
    response = client.post(FORM, form_data(contact_name="Jo Doe\nBcc: everyone@example.net"))

    assert response.status_code == 200
    assert "Your name: write it on one line, without line breaks" in response.content.decode()
    with pytest.raises(GovernanceError, match="Your name: write it on one line"):
        submit(cast.resource_a, record_id="udhr_fra/1", contact_name="Jo\r\nDoe")
    assert not Takedown.objects.exists()


def test_it_preselects_the_dataset_named_in_the_link(client, cast):
    page = client.get(FORM, {"resource": "test/corpus-b"}).content.decode()

    assert '<option value="test/corpus-b" selected>' in page
    assert "test/tokenizer" not in page  # a checkpoint holds no records to take down


def test_it_is_linked_from_every_page(client, cast):
    assert f'href="{FORM}"' in client.get(cast.resource_a.get_absolute_url()).content.decode()


@pytest.mark.parametrize("overrides, message", [
    ({"record_id": "", "url": "", "excerpt": "  "}, "Identify the content: give its record id, the URL it was taken from, or an excerpt"),
    ({"contact_email": "jo at example"}, "Your e-mail: enter an address like name@example.org"),
    ({"dataset": "test/no-such-corpus"}, "Dataset: test/no-such-corpus is not one of our datasets; choose one from the list."),
    ({"dataset": "test/tokenizer"}, "Dataset: test/tokenizer is not one of our datasets"),
    ({"record_id": "", "excerpt": "too short"}, "Text excerpt: give at least 20 characters"),
    ({"url": "not a url at all"}, "URL: enter a full web address"),
    ({"reason": ""}, "Reason: say why the content should be removed"),
])
def test_it_explains_bad_input_and_keeps_nothing(client, cast, overrides, message):
    response = client.post(FORM, form_data(**overrides))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Takedown.objects.exists()


def test_it_limits_requests_per_address(client, cast, mailoutbox):
    for number in range(RATE_LIMIT):
        assert client.post(FORM, form_data(contact_email=f"jo{number}@example.net"), REMOTE_ADDR="192.0.2.7").status_code == 302

    refused = client.post(FORM, form_data(reason="One more."), REMOTE_ADDR="192.0.2.7")

    assert refused.status_code == 429
    page = refused.content.decode()
    assert f"This address has sent {RATE_LIMIT} takedown requests in the last hour" in page and "One more." in page
    assert Takedown.objects.count() == RATE_LIMIT
    assert client.post(FORM, form_data(), REMOTE_ADDR="198.51.100.3").status_code == 302


def test_it_needs_the_forms_csrf_token(cast):
    browser = Client(enforce_csrf_checks=True)

    assert browser.post(FORM, form_data()).status_code == 403
    assert not Takedown.objects.exists()


def test_it_sends_the_confirmation_page_back_to_the_form_without_a_request(client, cast):
    response = client.get(reverse("takedown_received"))

    assert response.status_code == 302 and response["Location"] == FORM


# --- Finding, accepting, flagging, rebuilding ----------------------------------------------------------


def test_it_finds_a_record_by_id_and_accepting_excludes_flags_and_tells_each_holder(
        client, cast, built, second_holder, send_mail_on_commit, mailoutbox):
    v1, source, rows = built
    target = next(row for row in rows if row["lang"] == "fr" and row["section"] != "title")
    takedown = submit(cast.resource_a, record_id=target["id"])

    assert versions_containing(takedown=takedown) == {v1: [target["id"]]}
    reviewer = client_for(client, cast, "reviewer_a")
    page = reviewer.get(detail_url(takedown)).content.decode()
    assert target["id"] in page.split('id="scan"', 1)[1]
    words = " ".join(re.sub("<[^>]+>", " ", page).split())
    assert f"Received sent {timezone.localtime(takedown.created_at):%-d %b %Y}" in words and "Received received" not in words
    seq = last_seq()

    with send_mail_on_commit():
        response = reviewer.post(detail_url(takedown), {"action": "accept", "note": "It quotes a private letter."})

    assert response.status_code == 302 and response["Location"] == QUEUE
    takedown.refresh_from_db()
    assert takedown.status == "accepted" and takedown.decided_by == cast.reviewer_a
    assert list(takedown.affected_versions.all()) == [v1]
    assert set(Exclusion.objects.filter(takedown=takedown).values_list("record_id", "text_sha256")) == {
        (target["id"], text_sha256(target["text"]))}
    assert actions_since(seq) == ["takedown_accepted"]
    assert_audit_chain_intact()

    # Every holder of an active grant hears of it, one message each; former holders do not.
    holders = ["granted@example.org", "holder_two@example.org"]
    for address in holders:
        [message] = mail_to(mailoutbox, address)
        assert message.to == [address]
        assert "delete the affected records" in message.subject
        assert f"- v1 (revision {v1.revision}" in message.body and target["id"] in message.body
        assert "The next version of test/corpus-a excludes it" in message.body
    for role in ("revoked", "expired", "pending", "stranger"):
        assert not mail_to(mailoutbox, f"{role}@example.org")
    [to_requester] = mail_to(mailoutbox, "jo@example.net")
    assert "was accepted" in to_requester.subject and "It quotes a private letter." in to_requester.body
    assert "(v1)" in to_requester.body

    # The version is flagged: with the ids for those who may hold it, without for others.
    client.logout()
    granted = client_for(Client(), cast, "granted")
    for url in (cast.resource_a.get_absolute_url(), v1.get_absolute_url()):
        page = granted.get(url).content.decode()
        assert f"Content was removed from this dataset after v1 was published (takedown #{takedown.pk}" in page
        assert "Delete the affected records" in page and target["id"] in page
    public = Client().get(cast.resource_a.get_absolute_url()).content.decode()
    assert f"(takedown #{takedown.pk}" in public and target["id"] not in public

    # The next build drops exactly the targeted record, and its version is not flagged.
    build_command("test/corpus-a", "v2", source, id_column="id", language_column="lang", shard_size="64KiB")
    v2 = Version.objects.get(resource=cast.resource_a, name="v2")
    kept = {row["id"] for config in shard_rows(v2).values() for row in config}
    assert kept == {row["id"] for row in rows} - {target["id"]}
    assert versions_containing(takedown=takedown) == {v1: [target["id"]]}
    page = granted.get(v2.get_absolute_url()).content.decode()
    assert "Content was removed" not in page


def test_it_matches_an_excerpt_by_its_normalised_text(cast, built):
    v1, _, rows = built
    texts = [row["text"] for row in rows]
    target = next(row for row in rows if row["lang"] == "en" and len(row["text"]) > 120 and texts.count(row["text"]) == 1)
    # Pasted from a web page: line breaks, doubled spaces, a non-breaking space, trailing blanks.
    pasted = "\n  " + target["text"].replace(" ", "\n", 3).replace(" ", "  ", 2).replace(" ", "\u00a0", 1) + "  \n"
    assert pasted != target["text"] and text_sha256(pasted) == text_sha256(target["text"])
    whole = submit(cast.resource_a, excerpt=pasted)
    part = submit(cast.resource_a, excerpt="   ".join(target["text"][20:100].split()))

    assert versions_containing(takedown=whole) == {v1: [target["id"]]}
    assert versions_containing(takedown=part) == {v1: [target["id"]]}

    takedown_accept(takedown=whole, reviewer=cast.reviewer_a, note="Personal data.")

    assert set(whole.exclusions.values_list("record_id", "text_sha256")) == {(target["id"], text_sha256(target["text"]))}
    assert list(whole.affected_versions.all()) == [v1]


@pytest.mark.usefixtures("built")
def test_it_excludes_an_excerpt_found_nowhere_yet_by_its_hash(cast):
    excerpt = "A letter that was never part of any source we have built so far."
    takedown = submit(cast.resource_a, excerpt=excerpt)

    assert versions_containing(takedown=takedown) == {}
    takedown_accept(takedown=takedown, reviewer=cast.reviewer_a, note="Pre-emptive removal.")

    assert list(takedown.exclusions.values_list("record_id", "text_sha256")) == [("", text_sha256(excerpt))]
    assert not takedown.affected_versions.exists()


def test_it_refuses_a_url_alone_where_no_version_keeps_urls_as_the_readme_says(client, cast):
    with pytest.raises(GovernanceError, match="test/corpus-a keeps no URL for its records, so a URL alone cannot find") as refused:
        submit(cast.resource_a, url="https://blog.example.net/letter")
    assert refused.value.field == "url"

    page = client.post(FORM, form_data(record_id="", url="https://blog.example.net/letter")).content.decode()
    url_field = page.split('for="id_url"', 1)[1].split('for="id_excerpt"', 1)[0]
    assert "give its record id or an excerpt of its text as well" in url_field
    assert not Takedown.objects.exists()


def test_it_refuses_to_accept_a_url_alone_and_says_what_to_do(cast):
    takedown = received_before_the_url_rule(cast.resource_a, "https://blog.example.net/letter")

    with pytest.raises(GovernanceError, match="gives only a URL and nothing was found to exclude. Reject it, asking"):
        takedown_accept(takedown=takedown, reviewer=cast.reviewer_a, note="Found it.")

    assert takedown.status == "received" and not Exclusion.objects.exists()


def test_it_refuses_an_excerpt_that_matches_too_many_records(cast, built, monkeypatch):
    monkeypatch.setattr(takedowns, "MATCH_LIMIT", 3)
    takedown = submit(cast.resource_a, excerpt="Everyone has the right to")

    with pytest.raises(GovernanceError, match="matches 3 or more records of v1: too general"):
        takedown_accept(takedown=takedown, reviewer=cast.reviewer_a, note="Personal data.")

    assert Takedown.objects.get(pk=takedown.pk).status == "received" and not Exclusion.objects.exists()


# --- Rejecting, deciding twice, who may decide ----------------------------------------------------------


def test_it_rejects_with_a_reason_and_tells_the_requester(client, cast, send_mail_on_commit, mailoutbox):
    takedown = submit(cast.resource_a, record_id="udhr_fra/1")
    reviewer = client_for(client, cast, "reviewer_a")

    no_reason = reviewer.post(detail_url(takedown), {"action": "reject", "reason": ""})
    assert "Reason: say why the content stays" in no_reason.content.decode()
    seq = last_seq()
    with send_mail_on_commit():
        response = reviewer.post(detail_url(takedown), {"action": "reject", "reason": "The text is a public statute."})

    assert response.status_code == 302
    takedown.refresh_from_db()
    assert (takedown.status, takedown.decision_note) == ("rejected", "The text is a public statute.")
    assert actions_since(seq) == ["takedown_rejected"]
    assert not Exclusion.objects.exists() and not takedown.affected_versions.exists()
    [message] = mailoutbox
    assert message.to == ["jo@example.net"] and "was not accepted" in message.subject
    assert "The text is a public statute." in message.body
    assert "http://127.0.0.1:8000" + FORM + "?resource=test/corpus-a" in message.body


def test_it_refuses_to_decide_twice(client, cast):
    takedown = submit(cast.resource_a, record_id="udhr_fra/1")
    takedown_accept(takedown=takedown, reviewer=cast.reviewer_a, note="Personal data.")
    admin = client_for(client, cast, "admin")
    seq, exclusions = last_seq(), Exclusion.objects.count()

    with pytest.raises(GovernanceError, match=rf"Takedown #{takedown.pk} was already accepted by reviewer_a .*Reload the takedown queue"):
        takedown_reject(takedown=takedown, reviewer=cast.admin, reason="Changed my mind.")
    stale = Takedown.objects.get(pk=takedown.pk)
    stale.status = "received"  # a page opened before the first decision
    with pytest.raises(GovernanceError, match="was already accepted"):
        takedown_accept(takedown=stale, reviewer=cast.admin, note="Again.")
    response = admin.post(detail_url(takedown), {"action": "accept", "note": "Again."}, follow=True)

    assert any("was already accepted" in m for m in shown_messages(response))
    assert last_seq() == seq and Exclusion.objects.count() == exclusions
    assert Takedown.objects.get(pk=takedown.pk).decision_note == "Personal data."


def test_it_shows_a_takedown_only_to_the_reviewers_of_its_resource(client, cast):
    on_a = submit(cast.resource_a, record_id="udhr_fra/1")
    on_b = submit(cast.resource_b, record_id="udhr_eng/1")

    reviewer_b = client_for(client, cast, "reviewer_b")
    assert reviewer_b.get(detail_url(on_a)).status_code == 404
    assert reviewer_b.post(detail_url(on_a), {"action": "accept", "note": "Mine now."}).status_code == 404
    queue = reviewer_b.get(QUEUE).content.decode()
    assert detail_url(on_b) in queue and detail_url(on_a) not in queue
    assert Takedown.objects.get(pk=on_a.pk).status == "received"
    with pytest.raises(GovernanceError, match="You do not review test/corpus-a: ask an administrator"):
        takedown_accept(takedown=on_a, reviewer=cast.reviewer_b, note="Mine now.")
    assert client_for(Client(), cast, "stranger").get(QUEUE).status_code == 403


@pytest.mark.parametrize("role", ["reviewer_b", "granted", "stranger", "anonymous", "nobody"])
@pytest.mark.parametrize("decide", [
    lambda takedown, reviewer: takedown_accept(takedown=takedown, reviewer=reviewer, note="Personal data."),
    lambda takedown, reviewer: takedown_reject(takedown=takedown, reviewer=reviewer, reason="A public statute."),
], ids=["accept", "reject"])
def test_it_refuses_a_decision_from_anyone_but_a_reviewer_of_the_resource(cast, role, decide):
    # Called directly, as a task or a script might: no actor at all is refused like a stranger.
    takedown = submit(cast.resource_a, record_id="udhr_fra/1")
    reviewer = {"anonymous": AnonymousUser(), "nobody": None}[role] if role in ("anonymous", "nobody") else cast.users[role]
    seq = last_seq()

    with pytest.raises(GovernanceError, match="^You do not review test/corpus-a: ask an administrator to assign you.$"):
        decide(takedown, reviewer)

    assert Takedown.objects.get(pk=takedown.pk).status == "received"
    assert actions_since(seq) == [] and not Exclusion.objects.exists()


def test_it_names_an_operator_who_decides_from_the_command_line(cast):
    takedown = submit(cast.resource_a, record_id="udhr_fra/1")
    seq = last_seq()

    takedown_accept(takedown=takedown, reviewer=CommandLineOperator(name="ops"), note="Personal data.")

    takedown.refresh_from_db()
    assert (takedown.status, takedown.decided_by) == ("accepted", None)
    assert Exclusion.objects.get(takedown=takedown).record_id == "udhr_fra/1"
    [event] = AuditEvent.objects.filter(seq__gt=seq)
    assert (event.action, event.actor, event.data["via"], event.data["operator"]) == ("takedown_accepted", "", "command line", "ops")


# --- Takedowns by URL: sources that keep the page each record was taken from -----------------------------


def page_of(row: dict) -> str:
    """Where the record was taken from: the UDHR translation it belongs to, one page per translation."""
    return f"https://www.unicode.org/udhr/d/udhr_{row['key']}.html"


def with_urls(path, rows, *, recrawl: bool = False):
    """The corpus as a source with a url column; a re-crawl gives every record a new id and a changed text."""
    import json

    lines = []
    for row in rows:
        row = {**row, "url": page_of(row)}
        if recrawl:
            row = {**row, "id": "crawl2/" + row["id"], "text": row["text"] + " (crawl 2)"}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def built_with_urls(cast, release_storage, tmp_path, settings):
    """v1 of resource A built from the UDHR (three languages) with each record's page kept as `url`."""
    settings.BUILD_WORK_DIR = str(tmp_path / "builds")
    _, rows = udhr_sample(tmp_path, languages=LANGUAGES)
    source = with_urls(tmp_path / "udhr-urls.jsonl", rows)
    build_command("test/corpus-a", "v1", source, id_column="id", language_column="lang", keep_column="url", shard_size="64KiB")
    return Version.objects.get(resource=cast.resource_a, name="v1"), rows


def test_it_finds_every_record_of_a_page_by_its_url_and_later_builds_drop_the_page_again(
        client, cast, built_with_urls, tmp_path, send_mail_on_commit, mailoutbox):
    v1, rows = built_with_urls
    page = page_of(next(row for row in rows if row["lang"] == "fr"))
    on_page = sorted(row["id"] for row in rows if page_of(row) == page)
    # As a visitor would paste it: another scheme, capitals in the host, a trailing slash, a fragment.
    takedown = submit(cast.resource_a, url=page.replace("https://www.unicode.org", "http://WWW.Unicode.org") + "/#article-3")

    assert sorted(versions_containing(takedown=takedown)[v1]) == on_page and len(on_page) > 1
    reviewer = client_for(client, cast, "reviewer_a")
    detail = reviewer.get(detail_url(takedown)).content.decode()
    assert f"yes, {len(on_page)} records" in detail and on_page[0] in detail.split('id="scan"', 1)[1]
    assert "no-url-column" not in detail and 'id="url-unsearchable"' not in detail
    assert "not looked up everywhere" not in reviewer.get(QUEUE).content.decode()
    with send_mail_on_commit():
        reviewer.post(detail_url(takedown), {"action": "accept", "note": "The page is the requester's."})

    takedown.refresh_from_db()
    assert takedown.status == "accepted" and list(takedown.affected_versions.all()) == [v1]
    assert {e.record_id for e in takedown.exclusions.all() if e.record_id} == set(on_page)
    assert [e.url for e in takedown.exclusions.all() if e.url] == [takedown.url]
    [to_holder] = mail_to(mailoutbox, "granted@example.org")
    assert on_page[0] in to_holder.body

    # A re-crawl: the page's records come back under new ids with changed texts; only their URL names them.
    recrawl = with_urls(tmp_path / "recrawl.jsonl", rows, recrawl=True)
    build_command("test/corpus-a", "v2", recrawl, id_column="id", language_column="lang", keep_column="url", shard_size="64KiB")
    v2 = Version.objects.get(resource=cast.resource_a, name="v2")
    kept = [row for config in shard_rows(v2).values() for row in config]
    assert {row["id"] for row in kept} == {"crawl2/" + row["id"] for row in rows if page_of(row) != page}
    assert v2.build.result["dropped_by_takedown"] == len(on_page)
    assert "1 page(s) by URL" in v2.build.log


def test_it_tells_the_custodian_which_versions_keep_no_url_to_look_one_up_in(client, cast, built, tmp_path):
    v1, _, rows = built  # built without a url column
    page = page_of(rows[0])
    takedown = received_before_the_url_rule(cast.resource_a, page)
    reviewer = client_for(client, cast, "reviewer_a")

    assert "not looked up everywhere" in reviewer.get(QUEUE).content.decode()
    detail = reviewer.get(detail_url(takedown)).content.decode()
    assert "Its records keep no URL, so the URL was not looked up in v1." in detail
    assert 'id="url-unsearchable"' in detail and ">unknown<" in detail
    refused = reviewer.post(detail_url(takedown), {"action": "accept", "note": "Found it."}, follow=True)
    assert any("no published version of test/corpus-a keeps the URL of its records" in m for m in shown_messages(refused))
    assert Takedown.objects.get(pk=takedown.pk).status == "received"

    # A later version that keeps the URL is searched; the older one is still named as not searchable.
    build_command("test/corpus-a", "v2", with_urls(tmp_path / "urls.jsonl", rows), id_column="id", language_column="lang",
                  keep_column="url", shard_size="64KiB")
    v2 = Version.objects.get(resource=cast.resource_a, name="v2")
    detail = reviewer.get(detail_url(takedown)).content.decode()
    assert "not looked up in v1." in detail and "not looked up in v2." not in detail
    assert 'id="url-unsearchable"' not in detail
    assert list(versions_containing(takedown=takedown)) == [v2]
    takedown_accept(takedown=takedown, reviewer=cast.reviewer_a, note="Found it.")
    assert list(takedown.affected_versions.all()) == [v2]


def test_it_accepts_a_url_found_nowhere_yet_and_builds_drop_the_page_when_it_appears(cast, built_with_urls, tmp_path):
    _, rows = built_with_urls
    takedown = submit(cast.resource_a, url="https://blog.example.net/letter")

    assert versions_containing(takedown=takedown) == {}
    takedown_accept(takedown=takedown, reviewer=cast.reviewer_a, note="Pre-emptive removal.")

    assert list(takedown.exclusions.values_list("record_id", "text_sha256", "url")) == [("", "", "https://blog.example.net/letter")]
    assert not takedown.affected_versions.exists()
    letter = {**rows[0], "id": "blog/1", "text": "A private letter, copied from a blog.", "key": "blog"}
    source = with_urls(tmp_path / "with-letter.jsonl", rows + [letter])
    text = source.read_text(encoding="utf-8").replace(page_of(letter), "https://blog.example.net/letter/")
    source.write_text(text, encoding="utf-8")
    build_command("test/corpus-a", "v2", source, id_column="id", language_column="lang", keep_column="url", shard_size="64KiB")
    kept = {row["id"] for config in shard_rows(Version.objects.get(resource=cast.resource_a, name="v2")).values() for row in config}
    assert "blog/1" not in kept and len(kept) == len(rows)
