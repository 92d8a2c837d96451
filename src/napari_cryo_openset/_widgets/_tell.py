"""Telling the user what happened without covering the canvas (the workflow panel's message line)."""

from __future__ import annotations


def tell(viewer, text: str) -> None:
    """Tell the user ``text`` (a step finished, a file loaded): in the workflow panel's message line
    and the status bar when the panel is shown — not a notification over the canvas — else as a
    napari notification."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    from .panel import _PANELS

    panel = _PANELS.get(viewer)
    try:
        shown = panel is not None and panel.isVisible()
    except RuntimeError:  # its Qt side is gone
        shown = False
    if shown:
        panel.say(text)
        viewer.status = text
        return
    from napari.utils.notifications import show_info

    show_info(text)
