"""Config names in words: every page and form that shows a config says it as config_label does.

Language configs are BCP 47 tags (`fr`, `zh-Hans`, `und`); langcodes (with its language_data
tables, kept up to date from CLDR and the IANA registry) names them, so no hand-written table
goes stale. Configs that are not language tags (a source such as `wikipedia`) keep their name.
"""

from __future__ import annotations

from functools import lru_cache

import langcodes

# `und` is a tag for text whose language nobody identified, not a language: say so wherever it is listed.
UNDETERMINED = "und"
UNDETERMINED_LABEL = "Undetermined language (und): texts whose language is not identified"


@lru_cache(maxsize=4096)
def language_name(code: str) -> str | None:
    """The English name of a BCP 47 tag ("French", "Chinese (Simplified)"), or None if it is not one."""
    if code == UNDETERMINED:
        return "Undetermined language"
    if not langcodes.tag_is_valid(code):
        return None
    name = langcodes.Language.get(code).display_name()
    # A well-formed but unregistered tag (`books`) gets "Unknown language [books]" from langcodes.
    return None if "unknown language" in name.lower() else name


def config_label(code: str) -> str:
    """'French (fr)', the `und` explanation, or the bare name of a config that is not a language tag."""
    if code == UNDETERMINED:
        return UNDETERMINED_LABEL
    name = language_name(code)
    return f"{name} ({code})" if name else code


def config_choices(codes) -> list[tuple[str, str]]:
    """(code, label) pairs for a form's select, sorted by label so a reader finds a language by its name."""
    return sorted(((c, config_label(c)) for c in codes), key=lambda pair: pair[1].casefold())
