import pytest

from s4s_jupyter.core.scopes import ClinicalScope, Interaction, ScopeSet, ScopeSyntaxError

LAB = "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def test_v1_read_means_read_and_search() -> None:
    s = ScopeSet.parse("launch/patient patient/*.read openid fhirUser")
    assert s.permits("patient", "Observation", "r")
    assert s.permits("patient", "ImagingStudy", Interaction.SEARCH)
    assert not s.permits("patient", "Observation", "c")
    assert not s.permits("user", "Observation", "r")
    assert s.has("launch/patient") and s.has("openid")


def test_v2_letters_must_be_ordered_subset_of_cruds() -> None:
    assert ClinicalScope.parse("patient/Observation.rs").permissions == {Interaction.READ, Interaction.SEARCH}
    for bad in ("patient/Observation.sr", "patient/Observation.rr", "patient/Observation.x",
                "patient/Observation.", "patient/observation.rs", "nobody/Observation.rs",
                "patient/Observation.read?category=x"):
        with pytest.raises(ScopeSyntaxError):
            ClinicalScope.parse(bad)


def test_v2_query_restricts_the_search() -> None:
    s = ScopeSet.parse(f"patient/Observation.rs?{LAB}")
    lab = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    assert s.permits("patient", "Observation", "s", {"category": lab})
    assert not s.permits("patient", "Observation", "s", {})
    assert not s.permits("patient", "Observation", "s", {"category": "vital-signs"})
    assert not s.permits("patient", "Observation", "s", {"category": f"{lab},vital-signs"})
    assert s.restrictions("patient", "Observation", "s") == [(("category", lab),)]
    assert s.restrictions("patient", "Condition", "s") is None


def test_subset_for_refresh_may_only_narrow() -> None:
    granted = ScopeSet.parse("patient/*.rs offline_access launch/patient")
    assert ScopeSet.parse("patient/Observation.rs").is_subset_of(granted)
    assert ScopeSet.parse(f"patient/Observation.rs?{LAB}").is_subset_of(granted)
    assert not ScopeSet.parse("patient/Observation.cruds").is_subset_of(granted)
    assert not ScopeSet.parse("user/Observation.rs").is_subset_of(granted)
    assert not ScopeSet.parse("openid").is_subset_of(granted)


def test_strict_parsing_and_lenient_dropping() -> None:
    with pytest.raises(ScopeSyntaxError):
        ScopeSet.parse("patient/*.rs bogus")
    assert str(ScopeSet.parse("patient/*.rs bogus", strict=False)) == "patient/*.rs"


def test_narrowed_to_consent_choices() -> None:
    s = ScopeSet.parse("launch/patient patient/Observation.rs patient/Condition.rs")
    n = s.narrowed_to(["launch/patient", "patient/Condition.rs"])
    assert n.permits("patient", "Condition", "r") and not n.permits("patient", "Observation", "r")
