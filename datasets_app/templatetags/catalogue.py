from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    """A row's value by column name (column names come from data, not from Python attributes)."""
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def config_scope(item) -> str:
    """The configs a request asks for or a grant covers, in words: the review pages, My access and
    the access report all say it so."""
    named = ", ".join(item.configs)
    if not item.all_configs:
        return f"only {named}"
    everything = "every config without stricter conditions"
    return f"{everything}, and {named}" if named else everything


@register.filter
def narrowed(grant) -> bool:
    """Whether a grant covers less than its request asked for (a reviewer approved only some configs)."""
    asked = grant.request if grant is not None and grant.request_id else None
    return asked is not None and (asked.all_configs, sorted(asked.configs)) != (grant.all_configs, sorted(grant.configs))
