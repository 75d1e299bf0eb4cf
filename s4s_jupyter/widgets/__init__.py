"""ipywidgets for notebooks: a SMART login widget and an imaging study browser.

They hold no HTTP of their own: every call goes through the kit's :class:`~s4s_jupyter.Session`.
Imported on first use (``import s4s_jupyter`` stays cheap)::

    from s4s_jupyter.widgets import LoginWidget, StudyBrowser
    LoginWidget(ehr)          # who is signed in, sign in / out
    browser = StudyBrowser(ehr); browser
    browser.datasets          # pydicom Datasets of the last pull
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "LoginWidget": "s4s_jupyter.widgets.login",
    "StudyBrowser": "s4s_jupyter.widgets.studies",
    "extension_base_url": "s4s_jupyter.widgets.login",
}

__all__ = ["LoginWidget", "StudyBrowser", "extension_base_url"]

if TYPE_CHECKING:
    from s4s_jupyter.widgets.login import LoginWidget, extension_base_url
    from s4s_jupyter.widgets.studies import StudyBrowser


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 's4s_jupyter.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
