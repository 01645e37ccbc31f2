from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return getattr(settings, "SIGNUP_OPEN", True)

    def get_client_ip(self, request) -> str:
        # allauth's rate limits key on this: the same trusted-proxy rule as every other record.
        from portal.client import client_ip

        return client_ip(request) or "unknown"
