from django.apps import AppConfig


class DatasetsAppConfig(AppConfig):
    name = "datasets_app"
    verbose_name = "Catalogue, licenses and access"

    def ready(self) -> None:
        from django.core import checks
        from django.db.models.signals import post_migrate

        from datasets_app import db_guards, download_events, source_roots  # noqa: F401 (registers the download seal's verifier)

        checks.register(source_roots.roots_check)

        post_migrate.connect(db_guards.install, sender=self, dispatch_uid="datasets_app.db_guards")
