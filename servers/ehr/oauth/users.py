"""The EHR's logins: who may sign in, and for which patients they may act.

Passwords are stored only as scrypt hashes (RFC 7914, via :func:`hashlib.scrypt`) with a per-user salt,
and checked in constant time. The demo seeds its users from :class:`servers.demo_data.plan.DemoPlan`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from servers.demo_data.clinical import related_person_id

#: scrypt cost parameters (N, r, p): about 16 MiB and some tens of milliseconds per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) for ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest_b64)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt_b64), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True)
class User:
    """A login and the patients (FHIR ``Patient`` ids) it may act for."""

    username: str
    display_name: str
    patient_ids: tuple[str, ...]
    #: FHIR reference of the user: ``Patient/{id}`` for a patient; for a caregiver
    #: ``RelatedPerson/{username}``, which names the person, not a resource: see :meth:`fhir_user_for`
    fhir_user: str

    def may_act_for(self, patient_id: str | None) -> bool:
        return patient_id is not None and patient_id in self.patient_ids

    @property
    def is_caregiver(self) -> bool:
        return self.fhir_user.partition("/")[0] == "RelatedPerson"

    def fhir_user_for(self, patient_id: str | None) -> str | None:
        """The resolvable ``fhirUser`` reference of this login in a launch for ``patient_id`` (SMART App
        Launch 2.x "fhirUser": a Patient, Practitioner, PractitionerRole, RelatedPerson or Person the app can
        read): a patient is its ``Patient``; a caregiver is the ``RelatedPerson`` linking it to the patient
        picked at launch (``RelatedPerson/{username}-{patient}``, in that patient's compartment). None for a
        caregiver without a patient in context, or a patient it may not act for."""
        if not self.is_caregiver:
            return self.fhir_user
        if not self.may_act_for(patient_id):
            return None
        assert patient_id is not None
        return f"RelatedPerson/{related_person_id(self.username, patient_id)}"


def fhir_user_reference(username: str, patient_ids: tuple[str, ...], caregiver: bool) -> str:
    """The stored ``fhirUser`` kind of a login: a patient acting for themself is the ``Patient``; anyone
    acting for others is a ``RelatedPerson`` (one per patient: :meth:`User.fhir_user_for`)."""
    if not caregiver and len(patient_ids) == 1:
        return f"Patient/{patient_ids[0]}"
    return f"RelatedPerson/{username}"
