from django.core.management.base import BaseCommand

from portal.audit_checkpoints import audit_checkpoint_write, checkpoint_storage


class Command(BaseCommand):
    help = ("Write the audit chain's head as a new checkpoint object outside the database "
            "(the periodic task does this every AUDIT_CHECKPOINT_SECONDS; safe to run at any time).")

    def handle(self, *args, **options):
        checkpoint = audit_checkpoint_write()
        if checkpoint is None:
            self.stdout.write("Nothing to write: the trail is empty or its head is already checkpointed.")
            return
        self.stdout.write(self.style.SUCCESS(
            f"Checkpoint written: row #{checkpoint.seq} ({checkpoint.hash[:12]}…) as {checkpoint.name} "
            f"in {type(checkpoint_storage()).__name__}."))
