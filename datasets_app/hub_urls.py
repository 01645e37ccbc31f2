"""The Hub protocol's URL shapes (datasets_app.hub_views), included last from portal/urls.py: every
portal page keeps its URL, and the Hub's need no trailing slash (the clients never send one)."""

from django.urls import path, register_converter

from datasets_app import hub_views


class RepoKind:
    regex = "models|datasets"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(RepoKind, "hubkind")
REPO = "api/<hubkind:kind>/<str:namespace>/<str:slug>"

urlpatterns = [
    path("api/whoami-v2", hub_views.whoami, name="hub_whoami"),
    path(REPO, hub_views.repo_info, name="hub_repo_info"),
    # A branch such as refs/pr/1 arrives as refs%2Fpr%2F1, which Django decodes: answered RevisionNotFound.
    path(f"{REPO}/revision/<path:revision>", hub_views.repo_info, name="hub_repo_info_revision"),
    path(f"{REPO}/tree/<str:revision>", hub_views.tree, name="hub_tree"),
    path(f"{REPO}/tree/<str:revision>/<path:path>", hub_views.tree, name="hub_tree_path"),
    path(f"{REPO}/commits/<str:revision>", hub_views.commits, name="hub_commits"),
    path(f"{REPO}/paths-info/<str:revision>", hub_views.paths_info, name="hub_paths_info"),
    path("datasets/<str:namespace>/<str:slug>/resolve/<str:revision>/<path:path>", hub_views.resolve,
         {"kind": "datasets"}, name="hub_dataset_resolve"),
    path("<str:namespace>/<str:slug>/resolve/<str:revision>/<path:path>", hub_views.resolve,
         {"kind": "models"}, name="hub_model_resolve"),
]
