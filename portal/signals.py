from allauth.account.signals import email_confirmed, password_changed, password_reset
from allauth.mfa.signals import authenticator_added, authenticator_removed
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from portal.audit import audit_record
from portal.models import Profile

User = get_user_model()


@receiver(post_save, sender=User)
def _create_profile(sender, instance, created, **kwargs):
    if created:
        Profile.objects.get_or_create(user=instance)


@receiver(post_save, sender=User)
def _links_die_with_the_password(sender, instance, created, **kwargs):
    # Django keeps a newly set password on the instance until the save that stores it
    # (AbstractBaseUser._password): every way of setting one comes through here (the account
    # page, a reset by e-mail, the admin, `changepassword`), while a hash upgrade at sign-in
    # clears it first. A changed password suggests someone else may know the old one, and
    # links fetched under it are as good as the password was.
    if not created and getattr(instance, "_password", None) is not None:
        from datasets_app.links import links_revoke_all

        links_revoke_all(user=instance, actor=None, reason="password_changed")


@receiver(user_logged_in)
def _audit_login(sender, request, user, **kwargs):
    audit_record(action="login", actor=user, request=request)


@receiver(user_logged_out)
def _audit_logout(sender, request, user, **kwargs):
    if user is not None:
        audit_record(action="logout", actor=user, request=request)


@receiver(user_login_failed)
def _audit_login_failed(sender, credentials, request=None, **kwargs):
    # Only the identifier, never the password.
    identifier = credentials.get("username") or credentials.get("email") or ""
    audit_record(action="login_failed", data={"identifier": str(identifier)[:150]}, request=request)


@receiver(email_confirmed)
def _audit_email_confirmed(sender, request, email_address, **kwargs):
    audit_record(action="email_verified", actor=email_address.user, data={"email": email_address.email}, request=request)


@receiver(password_changed)
@receiver(password_reset)
def _audit_password(sender, request, user, **kwargs):
    audit_record(action="password_changed", actor=user, request=request)


@receiver(authenticator_added)
def _audit_mfa_added(sender, request, user, authenticator, **kwargs):
    audit_record(action="mfa_enabled", actor=user, data={"type": authenticator.type}, request=request)


@receiver(authenticator_removed)
def _audit_mfa_removed(sender, request, user, authenticator, **kwargs):
    audit_record(action="mfa_disabled", actor=user, data={"type": authenticator.type}, request=request)
