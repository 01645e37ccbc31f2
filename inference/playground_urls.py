from django.urls import path

from inference import playground_views

urlpatterns = [
    path("", playground_views.playground, name="playground"),
    path("jobs/<str:public_id>.json", playground_views.playground_job, name="playground_job"),
    path("jobs/<str:public_id>/cancel", playground_views.playground_job_cancel, name="playground_job_cancel"),
]
