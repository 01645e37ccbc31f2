from django.core.management.base import BaseCommand

from datasets_app.download_events import download_events_seal, download_events_unsealed


class Command(BaseCommand):
    help = ("Seal the download records written since the last seal into the audit chain "
            "(the periodic task does this every DOWNLOAD_SEAL_SECONDS; safe to run at any time).")

    def handle(self, *args, **options):
        seals = download_events_seal()
        rows = sum(seal.data["rows"] for seal in seals)
        self.stdout.write(self.style.SUCCESS(
            f"Sealed {rows} download record(s) in {len(seals)} audit event(s); {download_events_unsealed()} left unsealed."))
