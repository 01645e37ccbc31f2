from django.conf import settings
from django.db import models
from django_countries.fields import CountryField

from portal.validators import validate_orcid


class Profile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    full_name = models.CharField(max_length=200, blank=True)
    affiliation = models.CharField(max_length=200, blank=True)
    institutional_email = models.EmailField(blank=True)
    country = CountryField(blank=True)
    position = models.CharField(max_length=100, blank=True)
    orcid = models.CharField("ORCID iD", max_length=19, blank=True, validators=[validate_orcid])
    updated_at = models.DateTimeField(auto_now=True)
    # Every signed link carries the generation it was issued under; redeeming one checks it
    # against this. Raising it (links_revoke_all: on request, on a password change, on signing
    # out everywhere) kills every outstanding link of the account at once.
    link_generation = models.PositiveIntegerField(default=0, editable=False)

    def __str__(self) -> str:
        return self.full_name or self.user.get_username()

    @property
    def is_complete(self) -> bool:
        return bool(self.full_name and self.affiliation and self.country and self.position)


class AuditEvent(models.Model):
    """One row of the append-only, hash-chained audit trail.

    People and objects are recorded by value (ids and labels, no foreign keys):
    deleting a user must not rewrite history, and rewriting a row breaks its hash.
    """

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField()
    action = models.CharField(max_length=64, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    resource = models.CharField(max_length=201, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    # unique: two rows can never claim the same predecessor, so the chain cannot fork.
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor or 'system'}"
