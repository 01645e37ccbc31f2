from django.urls import path

from inference import api_views, openai_views

urlpatterns = [
    path("jobs", api_views.jobs, name="api_jobs"),
    path("jobs/<str:public_id>", api_views.job_detail, name="api_job"),
    path("jobs/<str:public_id>/cancel", api_views.job_cancel, name="api_job_cancel"),
    path("openapi.json", api_views.openapi, name="api_openapi"),
    # OpenAI-compatible (base_url <portal>/api/v1), and the tokenizer endpoints lm-evaluation-harness
    # looks for beside it.
    path("v1/completions", openai_views.completions, name="api_completions"),
    path("v1/models", openai_views.models, name="api_models"),
    path("tokenizer_info", openai_views.tokenizer_info, name="api_tokenizer_info"),
    path("tokenize", openai_views.tokenize, name="api_tokenize"),
    path("detokenize", openai_views.detokenize, name="api_detokenize"),
]
