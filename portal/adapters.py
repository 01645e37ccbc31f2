from allauth.account.adapter import DefaultAccountAdapter
from allauth.usersessions.adapter import DefaultUserSessionsAdapter
from django.conf import settings
from django.db import transaction
from django.contrib import messages

# allauth's messages to an address that nobody has shown to be theirs yet: the verification link
# (at sign-up, on the e-mail page, at a login before verifying) and the replies that keep account
# names private (signing up with a taken address, resetting the password of an unknown one).
_TO_UNVERIFIED = {"email_confirmation", "email_confirmation_signup", "account_already_exists", "unknown_account"}
_SENT_MESSAGE = "account/messages/email_confirmation_sent.txt"


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return getattr(settings, "SIGNUP_OPEN", True)

    def get_client_ip(self, request) -> str:
        # allauth's rate limits key on this: the same trusted-proxy rule as every other record.
        from portal.client import client_ip

        return client_ip(request) or "unknown"

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        from allauth.core import context as allauth_context

        from portal.client import client_ip
        from portal.mail_limits import MailLimitReached, unverified_mail_count

        kind = template_prefix.rsplit("/", 1)[-1]
        request = allauth_context.request
        if kind in _TO_UNVERIFIED:
            try:
                unverified_mail_count(ip=client_ip(request), recipient=email)
            except MailLimitReached as refused:
                # The replies that keep account names private are skipped without a word: saying
                # so would tell who has an account. A verification link is the visitor's own.
                if kind.startswith("email_confirmation") and request is not None:
                    messages.error(request, f"We did not send a verification link to {email}. {refused}")
                    request._unverified_mail_refused = {*getattr(request, "_unverified_mail_refused", ()), email}
                return
        super().send_mail(template_prefix, email, context)

    def add_message(self, request, level, message_template=None, message_context=None, extra_tags="", message=None):
        # allauth says "Confirmation email sent" after calling send_mail, whatever send_mail did.
        if message_template == _SENT_MESSAGE and (message_context or {}).get("email") in getattr(request, "_unverified_mail_refused", ()):
            return
        super().add_message(request, level, message_template, message_context, extra_tags, message)


class UserSessionsAdapter(DefaultUserSessionsAdapter):
    def end_sessions(self, sessions) -> None:
        # Whoever ends sessions (allauth's "sign out other sessions", the portal's "sign out
        # everywhere") fears someone else holds one, and so the signed links it fetched too.
        from datasets_app.links import links_revoke_all

        sessions = list(sessions)
        with transaction.atomic():
            super().end_sessions(sessions)
            for user in {session.user for session in sessions}:
                links_revoke_all(user=user, actor=user, reason="sessions_ended")
