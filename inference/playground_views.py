"""The playground: a researcher's form for inference jobs, their jobs, and each job's output as it is generated.

Jobs go through inference.services like every other client; the page polls a small JSON view of
each unfinished job (playground_job) and shows the text decoded here, on the web side, with the
checkpoint's own tokenizer (no torch in this process).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from inference import params, services
from inference.errors import JobError
from inference.formatting import cut_at_stop
from inference.models import InferenceJob
from inference.tokenizer import tokenizer_for

JOBS_SHOWN = 20


def _output_text(job: InferenceJob, output: dict, index: int, decode) -> str:
    params = job.params
    if job.kind == InferenceJob.Kind.GENERATE:
        return cut_at_stop(decode(output.get("token_ids") or []), params.get("stop") or [])[0]
    if job.kind == InferenceJob.Kind.SCORE:
        request = params["requests"][index]
        logprobs = ", ".join("–" if lp is None else f"{lp:.3f}" for lp in output.get("token_logprobs") or [])
        return (f"{decode(request['continuation'])!r} after the prompt: log-probability {output['sum']:.4f} "
                f"({'the greedy continuation' if output.get('is_greedy') else 'not the greedy continuation'}); "
                f"per token: {logprobs}")
    lines = []
    for layer, per_position in (output.get("logit_lens") or {}).items():
        for position, top in zip(params.get("positions") or [], per_position):
            lines.append(f"layer {layer}, position {position}: " + ", ".join(f"{decode([t])!r} {lp:.2f}" for t, lp in top))
    return "\n".join(lines)


def job_summary(job: InferenceJob) -> dict:
    """What the playground shows of a job, its token ids decoded with the checkpoint's tokenizer."""
    tokenizer = None

    def decode(ids: list[int]) -> str:
        nonlocal tokenizer
        if not ids:
            return ""
        if tokenizer is None:  # read once per job, and only for a job with something to show
            try:
                tokenizer = tokenizer_for(job.version)
            except JobError:
                # The checkpoint's tokenizer cannot be read (removed from storage, a version without one):
                # the job's own page must still show, so it shows the token ids.
                tokenizer = False
        if tokenizer is False:
            return "token ids " + " ".join(map(str, ids))
        return tokenizer.decode(ids, skip_special_tokens=False)

    params = job.params
    prompt = (params.get("prompts") or [[]])[0] if job.kind == InferenceJob.Kind.GENERATE else (
        params["requests"][0]["context"] if job.kind == InferenceJob.Kind.SCORE else params.get("prompt") or [])
    queued = job.status == InferenceJob.Status.QUEUED
    return {
        "id": job.public_id, "kind": job.kind, "status": job.status, "model": f"{job.resource.repo_id}@{job.version.name}",
        "created_at": job.created_at.isoformat(), "finished": job.is_finished,
        "queue_position": services.job_queue_position(job) if queued else None,
        "cancel_requested": job.cancel_requested_at is not None,
        "prompt": decode(prompt),
        "outputs": [{"text": _output_text(job, output, index, decode), "finish_reason": output.get("finish_reason")}
                    for index, output in enumerate(job.outputs or [])],
        "prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens, "error": job.error,
    }


class PlaygroundForm(forms.Form):
    model = forms.CharField(label="Checkpoint", widget=forms.Select)
    kind = forms.ChoiceField(choices=InferenceJob.Kind.choices, initial="generate",
                             help_text="Generate continues the prompt; score gives the log-probabilities of the "
                                       "continuation after the prompt; inspect shows hidden states and the logit lens.")
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), strip=False)
    continuation = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 2}),
                                   help_text="Score only: the text whose log-probabilities you want after the prompt.")
    max_new_tokens = forms.IntegerField(min_value=0, initial=32, label="Max new tokens")
    temperature = forms.FloatField(min_value=0, initial=0.0, help_text="0 is greedy.")
    top_p = forms.FloatField(min_value=0, max_value=1, initial=1.0, label="Top p")
    seed = forms.IntegerField(required=False, help_text="Makes sampling repeatable.")
    stop = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 1}),
                           help_text="Stop strings, one per line.")
    layers = forms.CharField(required=False, help_text="Inspect only: layer numbers, comma-separated (0 is the "
                                                       "embeddings; empty: the last layer).")
    positions = forms.CharField(required=False, initial="-1",
                                help_text="Inspect only: token positions, comma-separated (-1 is the last).")
    top_k = forms.IntegerField(required=False, min_value=1, max_value=20, initial=5, label="Top k")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.checkpoints = services.usable_checkpoints(user)
        self.fields["model"].widget.choices = [(f"{v.resource.repo_id}@{v.name}", f"{v.resource.repo_id} ({v.name})")
                                               for v in self.checkpoints]

    def clean_model(self):
        # The service's own answer, so a refused model says why and where to ask (a grant revoked
        # since the page was opened, a stranger posting a name).
        try:
            return services.version_for_model(self.user, self.cleaned_data["model"])
        except JobError as error:
            raise forms.ValidationError(str(error)) from None

    @staticmethod
    def _numbers(value: str, field: str) -> list[int]:
        try:
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        except ValueError:
            raise forms.ValidationError(f"Give the {field} as whole numbers separated by commas, e.g. 0, 3, -1.") from None

    def clean_layers(self):
        return self._numbers(self.cleaned_data["layers"], "layers")

    def clean_positions(self):
        return self._numbers(self.cleaned_data["positions"], "positions")

    def body(self) -> dict:
        """The job's parameters as inference.params reads them: text, tokenized there with the checkpoint's tokenizer."""
        data = self.cleaned_data
        if data["kind"] == InferenceJob.Kind.SCORE:
            return {"requests": [{"context": data["prompt"], "continuation": data["continuation"]}]}
        if data["kind"] == InferenceJob.Kind.INSPECT:
            given = {name: data[name] for name in ("layers", "positions", "top_k") if data[name]}
            return {"prompt": data["prompt"], **given}
        return {"prompts": [data["prompt"]], "max_new_tokens": data["max_new_tokens"], "temperature": data["temperature"],
                "top_p": data["top_p"], "seed": data["seed"], "stop": [s for s in data["stop"].splitlines() if s],
                "logprobs": None, "echo": False}


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def playground(request):
    form = PlaygroundForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        version = form.cleaned_data["model"]
        try:
            kind = form.cleaned_data["kind"]
            job, _ = services.job_submit(user=request.user, version=version, kind=kind, via=InferenceJob.Via.PLAYGROUND,
                                         params=params.params_validate(kind=kind, body=form.body(), version=version), request=request)
        except JobError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Job {job.public_id} is queued; its output appears below as it is generated.")
            return redirect("playground")
    jobs = InferenceJob.objects.filter(user=request.user).select_related("resource", "version")[:JOBS_SHOWN]
    return render(request, "inference/playground.html", {"form": form, "jobs": [job_summary(job) for job in jobs]})


@login_required
@never_cache
@require_GET
def playground_job(request, public_id: str):
    # Another user's job does not exist for you: 404, never 403, so ids cannot be probed.
    job = get_object_or_404(InferenceJob.objects.select_related("resource", "version"), public_id=public_id, user=request.user)
    return JsonResponse(job_summary(job))


@login_required
@require_POST
def playground_job_cancel(request, public_id: str):
    job = get_object_or_404(InferenceJob, public_id=public_id, user=request.user)
    try:
        job = services.job_cancel(job=job, actor=request.user)
    except JobError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Job {job.public_id} is cancelled." if job.is_finished
                         else f"Job {job.public_id} stops at the worker's next pass.")
    return redirect("playground")
