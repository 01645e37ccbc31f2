"""Signals datasets_app sends for other apps to act on, without datasets_app knowing them."""

from django.dispatch import Signal

# A grant stopped being active: sent with grant=<Grant> and reason="revoked" or "expired", inside
# the transaction that ends it, so what receivers change commits or rolls back with it.
grant_ended = Signal()
