"""Plain-language descriptions of SMART scopes for the consent page."""

from __future__ import annotations

from s4s_jupyter.core.scopes import ClinicalScope, Interaction, ScopeSyntaxError

_IDENTITY = {
    "launch/patient": "Know which patient you choose",
    "openid": "Confirm who you are (sign-in)",
    "fhirUser": "See which person record you are in this EHR",
    "profile": "See your name",
    "offline_access": "Keep access after you close the app, until you revoke it",
    "online_access": "Keep access while you are signed in",
    "launch": "Start from inside the EHR",
}

_VERBS = [(Interaction.READ, "read"), (Interaction.SEARCH, "search"), (Interaction.CREATE, "create"),
          (Interaction.UPDATE, "change"), (Interaction.DELETE, "delete")]


def describe_scope(scope: str) -> str:
    """A sentence for one scope; unknown text is shown as is (it is validated before the page)."""
    if scope in _IDENTITY:
        return _IDENTITY[scope]
    try:
        c = ClinicalScope.parse(scope)
    except ScopeSyntaxError:
        return scope
    verbs = [word for letter, word in _VERBS if letter in c.permissions]
    what = "all records" if c.resource_type == "*" else f"{c.resource_type} records"
    whose = {"patient": "of the chosen patient", "user": "you may see", "system": "of every patient"}
    text = f"{' and '.join(verbs).capitalize()} {what} {whose[c.context.value]}"
    if c.query:
        text += " where " + ", ".join(f"{k} is {v.rsplit('|', 1)[-1]}" for k, v in c.query)
    return text
