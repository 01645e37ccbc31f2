from django.urls import path

from datasets_app import download_views, link_views, manifest_views, review_views, takedown_views, token_views, views

urlpatterns = [
    path("catalogue/", views.catalogue, name="catalogue"),
    path("resources/<str:namespace>/<str:slug>/", views.resource_detail, name="resource_detail"),
    path("resources/<str:namespace>/<str:slug>/request/", views.access_request, name="access_request"),
    path("resources/<str:namespace>/<str:slug>/versions/<str:version>/", download_views.version_download, name="version_download"),
    path("resources/<str:namespace>/<str:slug>/versions/<str:version>/urls.txt", download_views.version_urls, name="version_urls"),
    path("resources/<str:namespace>/<str:slug>/versions/<str:version>/SHA256SUMS", download_views.version_sha256sums, name="version_sha256sums"),
    path("resources/<str:namespace>/<str:slug>/versions/<str:version>/files.json", download_views.version_manifest, name="version_manifest"),
    path("m/<str:token>/manifest.json", manifest_views.grant_manifest_view, name="grant_manifest"),
    path("access/", views.my_access, name="my_access"),
    path("access/tokens/", token_views.token_list, name="token_list"),
    path("access/tokens/<int:pk>/revoke/", token_views.token_revoke, name="token_revoke"),
    path("access/links/revoke/", link_views.links_revoke, name="links_revoke"),
    path("access/sign-out-everywhere/", link_views.sign_out_everywhere, name="sign_out_everywhere"),
    path("access/grants/<int:pk>/reaccept/", views.grant_reaccept_view, name="grant_reaccept"),
    path("review/", review_views.review_queue, name="review_queue"),
    path("review/requests/<int:pk>/", review_views.review_detail, name="review_detail"),
    path("review/bulk/", review_views.review_bulk, name="review_bulk"),
    path("review/grants/", review_views.review_grants, name="review_grants"),
    path("review/grants/<int:pk>/revoke/", review_views.review_revoke, name="review_revoke"),
    path("review/resources/<str:namespace>/<str:slug>/report.csv", review_views.review_report, name="review_report"),
    path("takedown/", takedown_views.takedown_form, name="takedown_form"),
    path("takedown/received/", takedown_views.takedown_received, name="takedown_received"),
    path("review/takedowns/", takedown_views.takedown_queue, name="takedown_queue"),
    path("review/takedowns/<int:pk>/", takedown_views.takedown_detail, name="takedown_detail"),
]
