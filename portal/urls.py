from django.contrib import admin
from django.urls import include, path

from datasets_app.download_views import file_download
from portal import views

urlpatterns = [
    # First: every range request of every download resolves this pattern, and the
    # patterns tried before it cost time on each one.
    path("d/<str:token>/<path:path>", file_download, name="file_download"),
    path("", views.home, name="home"),
    path("accounts/profile/", views.profile, name="profile"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("playground/", include("inference.playground_urls")),
    path("api/", include("inference.urls")),
    path("", include("datasets_app.urls")),
    # The Hugging Face Hub protocol (/api/{models,datasets}/..., /.../resolve/...): last, so it shadows no page.
    path("", include("datasets_app.hub_urls")),
]
