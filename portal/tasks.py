from celery import shared_task


# No retry: the next beat tick is the retry, and it checkpoints the head as it is by then.
@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=60, time_limit=90)
def audit_checkpoint_write() -> str:
    """Write the audit chain's head outside the database. Harmless when redelivered or run
    twice: a head already written is skipped, and no object is ever replaced."""
    from portal.audit_checkpoints import audit_checkpoint_write as write

    checkpoint = write()
    return f"wrote {checkpoint.name}" if checkpoint else "head unchanged"
