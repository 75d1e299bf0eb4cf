"""DICOM Unique Identifiers: validation per PS3.5 9.1.

A UID is at most 64 characters of digits and dots; each component is a run of digits that does not
start with ``0`` unless it is ``0`` itself. UIDs reach file systems and SQL only after this check.
"""

from __future__ import annotations

import re

from s4s_jupyter.core.errors import InvalidUID

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` is a valid UID (PS3.5 9.1)."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def check_uid(value: str, what: str = "UID") -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUID` naming ``what``."""
    if not isinstance(value, str) or not is_valid_uid(value):
        raise InvalidUID(f"{what} {value!r} is not a valid DICOM UID (PS3.5 9.1)")
    return value
