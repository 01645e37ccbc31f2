"""The portal's settings for the test suite: the same as production reads them, with two
changes. Every test builds a cast of ten users, and one full-strength PBKDF2 hash took
1.2 s on a shared machine; a weak hasher is fine for passwords that exist for a test.
And pytest's temporary folders are allowed source roots (at the end).

pytest.ini names this module, and pytest-django exports it as DJANGO_SETTINGS_MODULE,
so the processes the tests start (workers, gunicorn, manage.py) read it too.
"""

import getpass
import os
import tempfile
from pathlib import Path

from portal.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests publish and build from folders they write under tmp_path, inside pytest's temporary
# root (found as pytest finds it); the workers they start must accept those sources too.
_pytest_root = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
SOURCE_ROOTS = [*SOURCE_ROOTS, str(_pytest_root)]  # noqa: F405
