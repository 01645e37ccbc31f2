from django import template
from django_countries import countries

from datasets_app.authz import sentence as _sentence
from datasets_app.languages import config_choices
from datasets_app.languages import config_label as _config_label

register = template.Library()
config_label = register.filter("config_label", _config_label)
sentence = register.filter("sentence", _sentence)
config_options = register.filter("config_options", config_choices)  # (code, label) sorted by label, as the forms list them


@register.filter
def country_name(code: str) -> str:
    """A country question's answer (stored as its ISO code) by name, as the profile shows it."""
    return countries.name(code) or code


@register.filter
def get_item(mapping, key):
    """A row's value by column name (column names come from data, not from Python attributes)."""
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def config_scope(item, labels: str = "") -> str:
    """The configs a request asks for or a grant covers, in words: the review pages, My access and
    the access report all say it so. `|config_scope:"names"` names languages ("Arabic (ar)") for
    pages; the access report keeps the bare codes, for scripts."""
    named = ", ".join(map(config_label, item.configs) if labels else item.configs)
    if not item.all_configs:
        return f"only {named}"
    everything = "every config without stricter conditions"
    return f"{everything}, and {named}" if named else everything


@register.filter
def narrowed(grant) -> bool:
    """Whether a grant covers less than its request asked for (a reviewer approved only some configs)."""
    asked = grant.request if grant is not None and grant.request_id else None
    return asked is not None and (asked.all_configs, sorted(asked.configs)) != (grant.all_configs, sorted(grant.configs))
