"""Argument checking against the subset of JSON Schema the tools use.

Supported keywords: ``type`` (a name or a list), ``properties``, ``required``,
``additionalProperties`` (a boolean), ``enum``, ``items``, ``minimum``, ``maximum``,
``minLength``, ``maxLength``, ``minItems``, ``maxItems``. Other keywords (``description``,
``default``) are ignored. Small on purpose: the messages are written for the model to fix
its call, and the package needs no validator dependency for a dozen keywords.

>>> s = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"],
...      "additionalProperties": False}
>>> validate({"path": "a.txt"}, s)
[]
>>> validate({"path": 3, "mode": "x"}, s)
['`path`: expected string, got integer', 'unknown argument `mode` (accepted: path)']
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    for name, types in _TYPES.items():
        if isinstance(value, types):
            return name
    return type(value).__name__


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return name == "boolean"
    return isinstance(value, _TYPES.get(name, ()))


def validate(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Every way ``value`` breaks ``schema``, as messages naming the argument; [] if none."""
    label = f"`{where}`: " if where else ""
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is(value, n) for n in names):
            return [f"{label}expected {' or '.join(names)}, got {json_type(value)}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{label}must be one of {', '.join(map(repr, schema['enum']))}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{label}must be at least {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{label}must be at most {schema['maximum']}, got {value}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{label}must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{label}must have at most {schema['maxLength']} characters, got {len(value)}")
    if isinstance(value, (list, tuple)):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{label}must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{label}must have at most {schema['maxItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += validate(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"missing required argument `{_join(where, name)}`")
        for name, item in value.items():
            if name in props:
                errors += validate(item, props[name], _join(where, name))
            elif schema.get("additionalProperties", True) is False:
                accepted = ", ".join(props) or "none"
                errors.append(f"unknown argument `{_join(where, name)}` (accepted: {accepted})")
    return errors


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
