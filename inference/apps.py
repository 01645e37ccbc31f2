from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Inference"

    def ready(self) -> None:
        from datasets_app.signals import grant_ended

        grant_ended.connect(_stop_jobs_of_ended_grant, dispatch_uid="inference.stop_jobs_of_ended_grant")


def _stop_jobs_of_ended_grant(sender, *, grant, reason: str, **kwargs) -> None:
    from inference.services import jobs_end_for_grant

    jobs_end_for_grant(grant=grant, reason=reason)
