"""One figure module's text sizes, applied only while its figures are drawn."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt


def drawn_with(style: dict[str, Any]) -> Callable:
    """Decorator: run the drawing function under `style` (plt.rc_context), so that importing
    another figure module, or its own style, never changes these figures."""

    def decorate(draw: Callable) -> Callable:
        @functools.wraps(draw)
        def styled(*args, **kwargs):
            with plt.rc_context(style):
                return draw(*args, **kwargs)

        return styled

    return decorate
