import pytest

from s4s_jupyter.core.errors import InvalidUID
from s4s_jupyter.core.introspection import IntrospectionResult
from s4s_jupyter.core.pkce import make_verifier, s256_challenge, verify_s256
from s4s_jupyter.core.uids import check_uid, is_valid_uid


def test_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert verify_s256(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not verify_s256(verifier[:-1] + "x", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


def test_verifier_length_and_alphabet() -> None:
    v = make_verifier()
    assert 43 <= len(v) <= 128 and verify_s256(v, s256_challenge(v))
    with pytest.raises(ValueError):
        s256_challenge("short")
    assert not verify_s256("a" * 42, s256_challenge("a" * 43))


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.1", "0", "1.0.3", "2." + "1" * 62])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid) and check_uid(uid) == uid


@pytest.mark.parametrize("uid", ["", "1..2", "1.02", ".1", "1.", "1.2.a", "../etc", "1.2 ", "2." + "1" * 63])
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUID):
        check_uid(uid)


def test_introspection_round_trip_and_inactive_shape() -> None:
    r = IntrospectionResult(active=True, scope="patient/*.rs", client_id="c", exp=10, patient="p",
                            fhir_user="u")
    assert IntrospectionResult.from_json(r.to_json()) == r
    assert IntrospectionResult(active=False, scope="x", patient="p").to_json() == {"active": False}
    assert not IntrospectionResult.from_json({"active": "true", "scope": "x"}).active
