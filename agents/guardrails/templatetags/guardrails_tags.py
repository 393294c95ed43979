from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    """`{{ labels|get_item:key }}`: a dict lookup by a variable key (falls back to the key)."""
    try:
        return mapping.get(key, key)
    except AttributeError:
        return key
