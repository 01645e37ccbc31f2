"""Typed readers for environment variables.

Every setting the operator can give goes through one of these, so a bad value
stops start-up with a message naming the variable and what it expects, instead
of a confusing failure later.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = _raw(name)
    if value:
        return value
    if required:
        raise ImproperlyConfigured(f"{name} is required: set the environment variable {name}.")
    return default


def env_line(name: str, default: str) -> str:
    """Text that goes into mail headers (the portal's name in subjects, the sender's address): one line."""
    from django.core.exceptions import ValidationError

    from portal.validators import validate_one_line

    value = env_str(name, default)
    try:
        validate_one_line(value, label=name)
    except ValidationError as error:
        raise ImproperlyConfigured(error.messages[0]) from None
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off.")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}.")
    return number


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str, default: list[str] | None = None) -> list[str]:
    """A comma-separated list of IP addresses or networks (`127.0.0.1, 10.0.0.0/8, ::1`)."""
    import ipaddress

    items = env_list(name, default)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or network (e.g. 127.0.0.1 or 10.0.0.0/8).") from None
    return items


def env_locations(name: str, default: list[str]) -> list[str]:
    """A comma-separated list of absolute folders and s3://bucket/prefix entries."""
    items = env_list(name, default)
    for item in items:
        if item.startswith("s3://"):
            if not item[len("s3://"):].partition("/")[0]:
                raise ImproperlyConfigured(f"{name}: {item!r} names no bucket: use s3://BUCKET or s3://BUCKET/PREFIX.")
        elif not item.startswith("/"):
            raise ImproperlyConfigured(f"{name}: {item!r} is neither an absolute folder (/srv/corpora) nor s3://BUCKET/PREFIX.")
    return items


def env_url(name: str, default: str | None = None, *, schemes: tuple[str, ...]) -> str | None:
    value = _raw(name) or default
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ImproperlyConfigured(f"{name}={_redact(value)!r} must start with one of: {allowed}.")
    return value


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def env_duration(name: str, default: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Seconds, from `3600`, `90s`, `10m`, `12h` or `7d`."""
    value = (_raw(name) or default).lower()
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS else (value, "s")
    try:
        seconds = int(number) * _UNITS[unit]
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a duration: use seconds or a number with s, m, h or d (e.g. 7d).") from None
    if seconds < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} is shorter than the minimum of {minimum} seconds.")
    if maximum is not None and seconds > maximum:
        raise ImproperlyConfigured(f"{name}={value!r} is longer than the maximum of {maximum} seconds ({maximum // 86400} days).")
    return seconds


def local_secret_key(path) -> str:
    """The embedded default's SECRET_KEY: random, made on the first start, kept at `path`.

    A committed constant would let anyone who read the repository sign download links
    for any user, so none is ever used. The key is written to a private temporary file
    and then hard-linked into place: the link fails if the key already exists, so two
    processes starting at once both end up with the key of whichever linked first, and
    nobody ever reads a half-written file.
    """
    import secrets
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(64))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process started at the same moment and its key won
        finally:
            temporary.unlink(missing_ok=True)
    key = path.read_text().strip()
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} holds no usable secret key: delete it and start again (signed links issued so far stop working).")
    return key
