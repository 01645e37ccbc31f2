from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class PortalConfig(AppConfig):
    default = True
    name = "portal"
    verbose_name = "Portal: accounts and audit trail"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from portal import checks, db_guards, mfa, signals  # noqa: F401  (registers checks and receivers)

        post_migrate.connect(db_guards.install, sender=self, dispatch_uid="portal.db_guards")


class PortalAdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "portal.admin_site.PortalAdminSite"
