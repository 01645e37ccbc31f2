"""The portal's settings for the test suite: the same as production reads them, with one
change. Every test builds a cast of ten users, and one full-strength PBKDF2 hash took
1.2 s on a shared machine; a weak hasher is fine for passwords that exist for a test.

pytest.ini names this module, and pytest-django exports it as DJANGO_SETTINGS_MODULE,
so the processes the tests start (workers, gunicorn, manage.py) read it too.
"""

from portal.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
