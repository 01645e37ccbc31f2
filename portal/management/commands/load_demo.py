"""Demo data for the embedded default: four releases, two licenses, two users."""

import json
import shutil
import tempfile
from pathlib import Path

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from allauth.mfa.utils import decrypt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets_app.management.commands._common import command_line_operator
from datasets_app.models import AccessQuestion, License, LicenseVersion, Resource
from datasets_app.authz import can_download
from datasets_app.publishing import version_publish
from datasets_app.services import access_request_submit
from portal.shared import udhr_corpus

DEMO_LICENSE = """Responsible Data Use Agreement, version 1.0

1. You may use the released data for research and for building and evaluating language technology.
2. You will not try to identify any person described in the data, nor link it to other data to do so.
3. You will not redistribute the data or substantial parts of it; point others to this portal instead.
4. You will remove any content the collaboration asks you to remove after a takedown request.
5. You will cite the collaboration's release in any publication that uses the data.
6. Access is personal. Your institution's staff need their own access.
"""

MODEL_LICENSE = """Open Responsible AI License for the released model, version 1.0

1. You may run, study and fine-tune the model and share derivatives under these same terms.
2. You will not use the model for the uses listed in Attachment A (surveillance, disinformation, discrimination, medical advice without oversight).
3. You will pass these use restrictions on to anyone you share the model or a derivative with.
"""

# Small stand-ins written here, so that a fresh portal has something to download.
DEMO_CORPUS_FILES = {
    "README.md": "# UDHR demo release\n\nThree small configs, one per language, in JSON lines.\n",
    "data/en/train-00000-of-00001.jsonl": '{"id": "en-1", "text": "All human beings are born free and equal in dignity and rights."}\n',
    "data/fr/train-00000-of-00001.jsonl": '{"id": "fr-1", "text": "Tous les êtres humains naissent libres et égaux en dignité et en droits."}\n',
    "data/ar/train-00000-of-00001.jsonl": '{"id": "ar-1", "text": "يولد جميع الناس أحراراً متساوين في الكرامة والحقوق."}\n',
}
DEMO_TOKENIZER_FILES = {"tokenizer.json": '{"version": "1.0", "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1}}}\n'}

PASSWORDS = {"admin": "admin-demo-pass", "researcher": "researcher-demo-pass"}

# The model release's demo version: the release's architecture at a small shape trained for a minute
# on the UDHR corpus (inference.engine.demo), so the playground and the API answer in a blink on a
# laptop with text that looks like the declaration. Without the corpus, the tiny shape with random weights.
DEMO_CHECKPOINT_VERSION = "demo-small-udhr"
RANDOM_CHECKPOINT_VERSION = "demo-tiny"
# A bound on `make run`'s first start: about 70 steps of 2,048 tokens on 2 busy cores, which brings the
# held-out perplexity from the vocabulary's 8,000 to a few hundred (make-demo-checkpoint --train 180
# trains a better one). The result is kept under var/ and reused, whatever happens to the database.
DEMO_TRAIN_SECONDS = 75




class Command(BaseCommand):
    help = "Load demo releases, a license and demo accounts (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--train-seconds", type=float, default=DEMO_TRAIN_SECONDS,
                            help=f"how long the demo model trains on the UDHR corpus, once (default {DEMO_TRAIN_SECONDS})")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            # The demo accounts have published passwords and the admin's TOTP secret is printed:
            # in production they would be a superuser anyone can sign in as.
            raise CommandError(
                "load_demo refuses to run with DEBUG=0: it creates an administrator whose password is in the README "
                "and prints its TOTP secret. Create real accounts with `manage.py createsuperuser` instead, "
                "or run the demo on a machine of its own with DEBUG=1.")
        if options["train_seconds"] <= 0:
            raise CommandError("--train-seconds must be positive, e.g. --train-seconds 75")
        with transaction.atomic():
            corpus, model = self._load()
        # Outside the transaction: training takes a minute, and SQLite would stay locked for writes meanwhile.
        self._publish_checkpoint(model, train_seconds=options["train_seconds"])
        self._grant_model(model)
        # The real multilingual corpus, when the shared files are there: the demo builds a version
        # from it (one config per language), as a custodian would with build_dataset.
        try:
            corpus_file = udhr_corpus()
        except FileNotFoundError as missing:
            self.stdout.write(f"Skipping the demo's built v2.0: {missing}")
        else:
            if not corpus.versions.filter(name="v2.0", published_at__isnull=False).exists():
                self._build_udhr(corpus, corpus_file)
        secret = self._totp(get_user_model().objects.get(username="admin"))
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"  admin and reviewer:  admin / {PASSWORDS['admin']}   (TOTP secret {secret}; "
                          "current code: .venv/bin/python manage.py demo_totp admin)")
        self.stdout.write(f"  researcher:          researcher / {PASSWORDS['researcher']}")

    def _build_udhr(self, corpus, corpus_file: Path) -> None:
        from datasets_app import builds

        self.stdout.write(f"Building bigscience/roots-udhr v2.0 from {corpus_file} (one config per language)...")
        build = builds.build_create(
            resource=corpus, name="v2.0", actor=command_line_operator(None), enqueue=False,
            sources=[{"uri": str(corpus_file), "id_column": "id", "language_column": "lang", "source_name": "udhr"}],
            params={"shard_size": "16MiB", "dedup": True},
            changelog="Built from the UDHR corpus: one config per language, exact duplicates dropped.")
        attempt = builds.build_claim(build_id=build.pk, worker="load_demo")
        build = builds.build_run(build_id=build.pk, attempt=attempt)
        if build.status != build.Status.SUCCEEDED:
            self.stderr.write(f"The demo build failed: {build.error}")

    def _load(self):
        User = get_user_model()
        data_license, _ = License.objects.get_or_create(slug="responsible-data-use", defaults={"title": "Responsible Data Use Agreement"})
        data_v1 = self._license_version(data_license, "1.0", DEMO_LICENSE)
        model_license, _ = License.objects.get_or_create(slug="open-rail-m", defaults={"title": "Open RAIL-M"})
        model_v1 = self._license_version(model_license, "1.0", MODEL_LICENSE)

        admin = self._user(User, "admin", "admin@example.org", superuser=True,
                           profile={"full_name": "Ada Reviewer", "affiliation": "Data Governance Committee", "country": "FR", "position": "Committee chair"})
        self._user(User, "researcher", "researcher@example.org",
                                profile={"full_name": "Rosa Researcher", "affiliation": "University of Lisbon", "country": "PT", "position": "PhD student"})

        corpus, _ = Resource.objects.get_or_create(namespace="bigscience", slug="roots-udhr", defaults={
            "kind": Resource.Kind.DATASET, "title": "UDHR multilingual corpus",
            # One figure, named as the pages name it: configs (430 language tags, and und for the translations without one).
            "summary": "The Universal Declaration of Human Rights in 431 configs: one per language, and und for texts "
                       "whose language is not identified.",
            "description": "Paragraph-level text of the Universal Declaration of Human Rights in hundreds of languages and "
                           "40+ scripts, including right-to-left and CJK scripts. Access is reviewed by the data governance committee.",
            "access_policy": Resource.Policy.GATED_MANUAL, "license_version": data_v1, "default_grant_days": 365,
            "auto_approve_domains": "inria.fr\nhuggingface.co",
        })
        corpus.reviewers.add(admin)
        if not corpus.questions.exists():
            AccessQuestion.objects.create(resource=corpus, position=1, kind=AccessQuestion.Kind.CHOICE, label="Sector",
                                          choices="Academia\nNon-profit\nIndustry\nGovernment")
            AccessQuestion.objects.create(resource=corpus, position=2, kind=AccessQuestion.Kind.COUNTRY,
                                          label="Country where the data will be processed")
            AccessQuestion.objects.create(resource=corpus, position=3, kind=AccessQuestion.Kind.CHECKBOX,
                                          label="I will not try to identify people described in the data")
        model, _ = Resource.objects.get_or_create(namespace="bigscience", slug="polyglot-176b", defaults={
            "kind": Resource.Kind.CHECKPOINT, "title": "Polyglot 176B checkpoint",
            "summary": "The released 176-billion-parameter multilingual model, bf16 safetensors shards.",
            "description": "Weights of the final checkpoint. Approval is automatic once you accept the license.",
            "access_policy": Resource.Policy.GATED_AUTO, "license_version": model_v1, "default_grant_days": 730,
        })
        model.reviewers.add(admin)
        tokenizer, _ = Resource.objects.get_or_create(namespace="bigscience", slug="tokenizer", defaults={
            "kind": Resource.Kind.CHECKPOINT, "title": "Multilingual tokenizer",
            "summary": "The 250k-token byte-level BPE tokenizer, open to everyone.", "access_policy": Resource.Policy.OPEN,
        })

        self._publish(corpus, "v1.0", DEMO_CORPUS_FILES, "Demo release: three languages.")
        self._publish(tokenizer, "v1.0", DEMO_TOKENIZER_FILES, "Demo release.")
        return corpus, model

    def _publish_checkpoint(self, model, *, train_seconds: float) -> None:
        try:
            corpus_file = udhr_corpus()
        except FileNotFoundError as missing:
            if not model.versions.filter(name=RANDOM_CHECKPOINT_VERSION, published_at__isnull=False).exists():
                self.stdout.write(f"Publishing the demo checkpoint with random weights ({RANDOM_CHECKPOINT_VERSION}; its text "
                                  f"is gibberish), not the trained one: {missing}")
                self._publish_random_checkpoint(model)
            return
        if model.versions.filter(name=DEMO_CHECKPOINT_VERSION, published_at__isnull=False).exists():
            return
        folder = self._trained_checkpoint(corpus_file, train_seconds)
        training = json.loads((folder / "training.json").read_text())
        Path(settings.SOURCES_DIR).mkdir(parents=True, exist_ok=True)
        # Sources come only from SOURCE_ROOTS, which holds the drop folder, not the cache in var/.
        with tempfile.TemporaryDirectory(dir=settings.SOURCES_DIR) as drop:
            shutil.copytree(folder, drop, dirs_exist_ok=True)
            version_publish(resource=model, name=DEMO_CHECKPOINT_VERSION, source=drop, actor=command_line_operator(None),
                            changelog=f"Demo checkpoint: the release's architecture at a small shape, trained for "
                                      f"{training['seconds']:.0f} s on {training['tokens_seen']:,} tokens of the UDHR corpus in "
                                      f"{len(training['corpus']['languages'])} languages "
                                      f"(held-out perplexity {training['held_out']['perplexity_fp32']:.0f}; training.json says "
                                      "how), for trying the playground and the research API.")

    def _trained_checkpoint(self, corpus_file: Path, train_seconds: float) -> Path:
        """The trained demo model in var/, trained now unless a run with the same budget on the same corpus left it there."""
        from inference.engine.demo import DEMO_LANGUAGES, make_demo_checkpoint
        from inference.engine.train import corpus_sha256

        folder = Path(settings.VAR_DIR) / "demo-checkpoints" / f"small-udhr-{train_seconds:g}s"
        sha256 = corpus_sha256(corpus_file)
        record = folder / "training.json"  # written last: its presence means a complete checkpoint
        kept = json.loads(record.read_text())["corpus"] if record.is_file() else {}
        if kept.get("sha256") == sha256 and kept.get("languages") == sorted(DEMO_LANGUAGES):
            self.stdout.write(f"Reusing the trained demo model in {folder}")
            return folder
        self.stdout.write(f"Training the demo model (BLOOM, small shape) on {len(DEMO_LANGUAGES)} languages of {corpus_file} "
                          f"for {train_seconds:g} s, once: it is kept in {folder} for later runs...")
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        make_demo_checkpoint(partial, shape="small", dtype="fp32", corpus=corpus_file, train_seconds=train_seconds,
                             languages=DEMO_LANGUAGES, log=lambda line: self.stdout.write(f"  {line}"))
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        return folder

    @staticmethod
    def _publish_random_checkpoint(model) -> None:
        from inference.engine.demo import make_demo_checkpoint

        Path(settings.SOURCES_DIR).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.SOURCES_DIR) as folder:
            make_demo_checkpoint(folder, shape="tiny", dtype="fp32")
            version_publish(resource=model, name=RANDOM_CHECKPOINT_VERSION, source=folder, actor=command_line_operator(None),
                            changelog="Demo checkpoint: the release's architecture at a tiny shape with random weights, "
                                      "for trying the playground and the research API. Its text is gibberish.")

    @staticmethod
    def _grant_model(model) -> None:
        # The demo researcher accepts the model license as anyone would (the release approves every
        # complete request), so the playground works for them at once; the corpus still asks for a request.
        researcher = get_user_model().objects.get(username="researcher")
        if can_download(researcher, model).allowed:
            return
        access_request_submit(user=researcher, resource=model, answers=[], signature=researcher.profile.full_name,
                              intended_use="Trying the playground and the research API on the demo checkpoint.")

    @staticmethod
    def _publish(resource, name, files, changelog):
        if resource.versions.filter(name=name, published_at__isnull=False).exists():
            return
        # In the drop folder: sources come only from SOURCE_ROOTS, which the embedded default gives it.
        Path(settings.SOURCES_DIR).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.SOURCES_DIR) as folder:
            for path, text in files.items():
                target = Path(folder) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            version_publish(resource=resource, name=name, source=folder, actor=command_line_operator(None), changelog=changelog)

    @staticmethod
    def _license_version(license, version, text):
        existing = LicenseVersion.objects.filter(license=license, version=version).first()
        return existing or LicenseVersion.objects.create(license=license, version=version, text=text, sha256=LicenseVersion.digest(text))

    @staticmethod
    def _user(User, username, email, *, profile, superuser=False):
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User(username=username, email=email, is_staff=superuser, is_superuser=superuser)
            user.set_password(PASSWORDS[username])
            user.save()
        EmailAddress.objects.get_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
        for name, value in profile.items():
            setattr(user.profile, name, value)
        user.profile.save()
        return user

    @staticmethod
    def _totp(user) -> str:
        authenticator = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
        if authenticator is None:
            authenticator = TOTP.activate(user, generate_totp_secret()).instance
        return decrypt(authenticator.data["secret"])
