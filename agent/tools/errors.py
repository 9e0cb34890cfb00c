"""How a refused file operation is told to the model: the path, the errno, the policy rule."""

from __future__ import annotations

from typing import Any

from agent.tools.base import ToolOutput


def file_error(exc: Any) -> ToolOutput:
    """A `sandbox.session.FileOpError` as tool output, with its Denial when the policy explains it."""
    text = str(exc)
    denials = [exc.denial] if getattr(exc, "denial", None) is not None else []
    if denials:
        text += "\nThe sandbox policy refused this; it was not a transient error."
    return ToolOutput(text, is_error=True, denials=denials)
