from django.core.management.base import BaseCommand, CommandError

from portal.audit import audit_verify
from portal.audit_checkpoints import audit_checkpoint_latest, audit_checkpoint_verify


class Command(BaseCommand):
    help = ("Check the audit trail's hash chain, and that it still reaches the latest checkpoint kept outside "
            "the database; report the first row that was edited, deleted or reordered, or how many were cut off its end.")

    def handle(self, *args, **options):
        checked, broken = audit_verify()
        if broken is not None:
            raise CommandError(f"Audit trail broken at row #{broken.seq}: {broken.problem}. {checked} row(s) before it verify.")
        try:
            checkpoint = audit_checkpoint_latest()
        except ValueError as error:
            raise CommandError(f"Audit trail not verified against its checkpoints: {error}. Look at who wrote that object.") from None
        if checkpoint is None:
            self.stdout.write(self.style.SUCCESS(f"Audit trail intact: {checked} row(s) verified."))
            self.stdout.write(self.style.WARNING(
                "No audit checkpoint yet, so rows cut from the end of the trail would go unnoticed: "
                "run `manage.py checkpoint_audit`, and `celery -A portal beat` to write one every AUDIT_CHECKPOINT_SECONDS."))
            return
        if (cut := audit_checkpoint_verify(checkpoint=checkpoint)) is not None:
            raise CommandError(f"Audit trail broken: {cut.problem}. {checked} row(s) verify up to #{checked}.")
        self.stdout.write(self.style.SUCCESS(
            f"Audit trail intact: {checked} row(s) verified; it reaches the latest checkpoint "
            f"(row #{checkpoint.seq} of {checkpoint.created_at}, {checkpoint.name})."))
