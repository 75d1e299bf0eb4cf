"""jupyter_server extension: the SMART login's redirect and the shared token store (issue 6).

Enabled by ``jupyter-config/jupyter_server_config.d/s4s_jupyter.json`` (installed into
``etc/jupyter/jupyter_server_config.d``), which names this module. The extension app lives in
:mod:`s4s_jupyter.serverext.app`; it is imported only when the server loads the extension, so importing
``s4s_jupyter`` in a kernel stays cheap. See ``docs/jupyter.md``.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The extension points jupyter_server discovers (``ServerApp.jpserver_extensions``)."""
    from s4s_jupyter.serverext.app import S4SExtension

    return [{"module": "s4s_jupyter.serverext", "app": S4SExtension}]
