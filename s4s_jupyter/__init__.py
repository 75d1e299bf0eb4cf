"""s4s-jupyter: imaging research over SMART on FHIR and DICOMweb from JupyterLab.

Importing this package is cheap: the kit's pieces are imported when first used::

    import s4s_jupyter as s4s
    ehr = s4s.connect("http://127.0.0.1:8080/fhir")     # SMART login (PKCE) in the browser
    labs = ehr.labs()                                   # pandas DataFrame
    studies = ehr.imaging_studies()                     # one row per ImagingStudy
    datasets = ehr.retrieve(studies.iloc[0])            # pydicom Datasets
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access, PEP 562)
_LAZY = {
    "connect": "s4s_jupyter.client.session",
    "Session": "s4s_jupyter.client.session",
    "DEFAULT_SCOPES": "s4s_jupyter.client.session",
    "DICOMweb": "s4s_jupyter.client.dicomweb",
    "FormLogin": "s4s_jupyter.client.automation",
    "LoopbackRedirect": "s4s_jupyter.client.launch",
    "SmartConfiguration": "s4s_jupyter.client.discovery",
    "TokenSet": "s4s_jupyter.client.tokens",
    "TokenStore": "s4s_jupyter.client.tokens",
}

__all__ = ["DEFAULT_SCOPES", "DICOMweb", "FormLogin", "LoopbackRedirect", "Session", "SmartConfiguration",
           "TokenSet", "TokenStore", "__version__", "connect"]

if TYPE_CHECKING:
    from s4s_jupyter.client.automation import FormLogin
    from s4s_jupyter.client.dicomweb import DICOMweb
    from s4s_jupyter.client.discovery import SmartConfiguration
    from s4s_jupyter.client.launch import LoopbackRedirect
    from s4s_jupyter.client.session import DEFAULT_SCOPES, Session, connect
    from s4s_jupyter.client.tokens import TokenSet, TokenStore


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 's4s_jupyter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
