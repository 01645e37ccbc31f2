import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from portal.audit import GENESIS_HASH, audit_record, audit_verify
from portal.models import AuditEvent


def _tamper():
    """Act as a database superuser would: on PostgreSQL, switch the append-only trigger off first."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER portal_auditevent_append_only")


def _seed(n=5):
    return [audit_record(action="test_event", data={"i": i, "text": "Déclaration universelle — 世界人权宣言"}) for i in range(n)]


@pytest.mark.django_db
def test_it_chains_every_event_to_the_previous_one():
    events = _seed(5)
    assert events[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    checked, broken = audit_verify()
    assert (checked, broken) == (5, None)


@pytest.mark.django_db
def test_it_reports_intact_trail(capsys):
    _seed(3)
    call_command("verify_audit")
    assert "Audit trail intact: 3 row(s) verified." in capsys.readouterr().out


@pytest.mark.django_db
def test_it_catches_an_edited_row():
    events = _seed(5)
    _tamper()
    AuditEvent.objects.filter(pk=events[2].pk).update(data={"i": 99})
    with pytest.raises(CommandError, match=r"broken at row #3: row #3 \(test_event\) was edited"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_catches_an_edited_row_whose_hash_was_recomputed():
    events = _seed(5)
    from portal.audit import event_hash

    _tamper()
    forged = AuditEvent.objects.get(pk=events[1].pk)
    forged.actor = "someone-else"
    forged.hash = event_hash(forged)
    forged.save()
    with pytest.raises(CommandError, match=r"row #3 does not link to row #2"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_catches_a_deleted_row():
    events = _seed(5)
    _tamper()
    AuditEvent.objects.filter(pk=events[1].pk).delete()
    with pytest.raises(CommandError, match=r"row #2 is missing \(next row is #3\): a row was deleted"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_refuses_updates_and_deletes_in_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's; SQLite relies on the hash chain")
    event = _seed(1)[0]
    for attempt in (lambda: AuditEvent.objects.filter(pk=event.pk).update(actor="x"),
                    lambda: AuditEvent.objects.filter(pk=event.pk).delete()):
        with pytest.raises(DatabaseError, match="append-only"):
            with transaction.atomic():
                attempt()


@pytest.mark.django_db
def test_it_rolls_back_with_the_change_it_records():
    _seed(2)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            audit_record(action="never_happened")
            raise RuntimeError("the change failed")
    assert not AuditEvent.objects.filter(action="never_happened").exists()
    assert audit_verify() == (2, None)


@pytest.mark.django_db(transaction=True)
def test_it_never_forks_with_parallel_writers():
    """8 threads, each on its own database connection, append 25 events at once."""
    threads_count, per_thread = 8, 25
    barrier = threading.Barrier(threads_count)
    errors = []

    def writer(n):
        try:
            barrier.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit_record(action="parallel", data={"writer": n, "i": i})
        except Exception as error:  # reported below, with the thread that hit it
            errors.append(f"writer {n}: {error!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    total = threads_count * per_thread
    assert AuditEvent.objects.count() == total
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == list(range(1, total + 1))
    assert audit_verify() == (total, None)
