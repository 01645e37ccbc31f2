import re
import unicodedata

from django.core.exceptions import ValidationError

_ORCID_RE = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")


def orcid_checksum(base_digits: str) -> str:
    """ISO 7064 MOD 11-2 check character, as ORCID defines it."""
    total = 0
    for digit in base_digits:
        total = (total + int(digit)) * 2
    result = (12 - total % 11) % 11
    return "X" if result == 10 else str(result)


def validate_orcid(value: str) -> None:
    if not _ORCID_RE.match(value):
        raise ValidationError(
            "Enter an ORCID iD as four groups of four characters, like 0000-0002-1825-0097.",
            code="orcid_format",
        )
    digits = value.replace("-", "")
    if orcid_checksum(digits[:-1]) != digits[-1]:
        raise ValidationError(
            "This ORCID iD's check digit is wrong: copy it again from your ORCID record.",
            code="orcid_checksum",
        )


def normalize_orcid(value: str) -> str:
    value = value.strip()
    for prefix in ("https://orcid.org/", "http://orcid.org/", "orcid.org/"):
        if value.lower().startswith(prefix):
            value = value[len(prefix):]
    return value.upper()


# Line and paragraph separators are not in category Cc, yet Python, and some mail software, break lines on them.
_CONTROL_CATEGORIES = {"Cc", "Zl", "Zp"}


def validate_one_line(value: str, *, label: str) -> None:
    """Refuse line breaks, tabs and other control characters in text that ends up in a mail header.

    A name goes into subjects and display names: a line break there would start a header of the
    sender's choosing, and Django refuses to send such a message at all, so the mail is lost.
    """
    for char in value:
        if unicodedata.category(char) in _CONTROL_CATEGORIES:
            raise ValidationError(
                f"{label}: write it on one line, without line breaks, tabs or other control characters "
                f"(found U+{ord(char):04X}); it is used in e-mails.",
                code="control_character",
            )


def one_line(text: str) -> str:
    """`text` with its control characters and runs of spaces turned into single spaces."""
    return " ".join("".join(" " if unicodedata.category(char) in _CONTROL_CATEGORIES else char for char in text).split())
