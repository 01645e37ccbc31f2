from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    """A row's value by column name (column names come from data, not from Python attributes)."""
    return mapping.get(key) if hasattr(mapping, "get") else None
