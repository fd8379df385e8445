"""What every widget's buttons share: how a button looks, and how a person's action is run
and answered (its refusal shown next to the buttons, never swallowed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as ipw

from ..exceptions import AgentorchError


def button(label: str, css: str, style: str = "", tip: str = "") -> ipw.Button:
    """A button sized to its label; ``css`` is the class tests and the browser find it by."""
    b = ipw.Button(description=label, button_style=style, tooltip=tip or label,
                   layout=ipw.Layout(width="auto"))
    b.add_class(css)
    return b


def perform(label: ipw.Label, fn: Callable[[], Any], done: str | None = None) -> bool:
    """Run a person's action ``fn``; show its refusal (or ``done``) in ``label``.
    Returns whether it went through."""
    try:
        fn()
    except AgentorchError as exc:
        label.value = f"refused: {exc}"
        label.remove_class("ao-ok")
        label.add_class("ao-refused")
        return False
    label.value = done or ""
    label.remove_class("ao-refused")
    label.add_class("ao-ok")
    return True
