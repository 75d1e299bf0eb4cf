"""FHIR R4 clinical resources for the demo plan: everything the Sync for Science calls read.

For each :class:`~servers.demo_data.plan.DemoPatient` this builds, from the plan alone (a random generator
seeded with the plan's seed and the patient id; no clock, no global random state):

- ``Patient`` with an MR identifier (``v2-0203|MR``, system :data:`MRN_SYSTEM`, value = the DICOM PatientID);
- ``Condition``: chronic problems, plus one per abnormal imaging finding (a pulmonary nodule, emphysema, ...)
  whose ``evidence`` names the radiology report, so a cohort analysis can join FHIR and DICOM;
- ``MedicationRequest`` and ``MedicationStatement`` (RxNorm), ``AllergyIntolerance``;
- ``Observation``: labs (LOINC, UCUM units, one value per visit so trends can be plotted: HbA1c, creatinine,
  hemoglobin, LDL, glucose, potassium), vital signs (R4 vital signs profile: blood pressure panel with
  systolic/diastolic components, heart rate, weight, height, BMI) and smoking status (LOINC 72166-2);
- ``Procedure`` (each imaging study, an ECG, ...), ``Immunization`` (CVX), ``DocumentReference`` (a
  progress note as base64 ``text/plain``);
- ``RelatedPerson`` for each caregiver login of the plan (a :class:`~servers.demo_data.plan.DemoUser` acting
  for several patients), one per patient it acts for, id :func:`related_person_id` (``{username}-{patient}``):
  the resource a caregiver's SMART ``fhirUser`` names in a launch for that patient (R4 RelatedPerson is in
  the Patient compartment through ``RelatedPerson.patient``);
- one radiology ``DiagnosticReport`` per imaging study: category LOINC LP29684-5, ``effectiveDateTime`` =
  the study's start, ``conclusion`` = the plan's finding, and ``imagingStudy`` a *logical* reference by
  identifier (``urn:dicom:uid`` / ``urn:oid:{StudyInstanceUID}``), since the ImagingStudy lives at the
  broker, not at this EHR.

``meta.lastUpdated`` follows each resource's clinical date (plus a short documentation lag, never past
:data:`~servers.demo_data.plan.ANCHOR`), and a few resources are updated later (a pneumonia resolves, an
antibiotic course completes), so ``_lastUpdated=gt...`` returns a proper subset.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from servers.demo_data.plan import ANCHOR, DemoPatient, DemoPlan, DemoUser, StudyPlan

Resource = dict[str, Any]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
MEDREQ_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
MEDSTATEMENT_CATEGORY = "http://terminology.hl7.org/CodeSystem/medication-statement-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DOCREF_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"

#: The assigning authority of medical record numbers (the value is the DICOM PatientID).
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
#: The assigning authority of accession numbers (DICOM AccessionNumber).
ACCESSION_SYSTEM = "urn:oid:2.16.840.1.113883.19.5.2"
#: Identifier system of DICOM UIDs in FHIR (R4 ImagingStudy.identifier).
DICOM_UID_SYSTEM = "urn:dicom:uid"

#: How far back the synthetic history reaches before ANCHOR.
HISTORY_YEARS = 6


def coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def concept(*codings: dict[str, str], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": list(codings)}
    out["text"] = text or codings[0]["display"]
    return out


def instant(moment: datetime) -> str:
    """R4 ``instant``/``dateTime`` with seconds and ``Z``."""
    return moment.astimezone(ANCHOR.tzinfo).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Medication:
    rxnorm: str
    display: str
    dosage: str


@dataclass(frozen=True)
class Problem:
    key: str
    snomed: tuple[str, str] | None
    icd10: tuple[str, str]
    medication: Medication | None = None


CHRONIC: tuple[Problem, ...] = (
    Problem("diabetes", ("44054006", "Diabetes mellitus type 2"),
            ("E11.9", "Type 2 diabetes mellitus without complications"),
            Medication("861007", "metformin hydrochloride 500 MG Oral Tablet",
                       "500 mg by mouth twice daily with meals")),
    Problem("hypertension", ("59621000", "Essential hypertension"),
            ("I10", "Essential (primary) hypertension"),
            Medication("314076", "lisinopril 10 MG Oral Tablet", "10 mg by mouth once daily")),
    Problem("hyperlipidemia", ("55822004", "Hyperlipidemia"), ("E78.5", "Hyperlipidemia, unspecified"),
            Medication("617310", "atorvastatin 20 MG Oral Tablet", "20 mg by mouth at bedtime")),
    Problem("asthma", ("195967001", "Asthma"), ("J45.909", "Unspecified asthma, uncomplicated"),
            Medication("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
                       "2 puffs inhaled every 4 to 6 hours as needed for wheezing")),
    Problem("ckd", ("433144002", "Chronic kidney disease stage 3"),
            ("N18.30", "Chronic kidney disease, stage 3 unspecified")),
    Problem("osteoarthritis", ("239873007", "Osteoarthritis of knee"),
            ("M17.9", "Osteoarthritis of knee, unspecified"),
            Medication("197806", "ibuprofen 600 MG Oral Tablet",
                       "600 mg by mouth every 8 hours as needed for pain")),
)

#: Imaging findings of the plan that are a condition; normal findings have none.
FINDING_PROBLEMS: dict[str, Problem] = {
    "Small pulmonary nodule, 4 mm, right upper lobe.": Problem(
        "pulmonary-nodule", ("427359005", "Solitary nodule of lung"), ("R91.1", "Solitary pulmonary nodule")),
    "Mild emphysematous changes.": Problem(
        "emphysema", ("87433001", "Pulmonary emphysema"), ("J43.9", "Emphysema, unspecified")),
    "Hypodense liver lesion, likely cyst.": Problem(
        "liver-cyst", None, ("K76.89", "Other specified diseases of liver")),
    "Scattered white matter hyperintensities.": Problem(
        "white-matter", None, ("R90.82", "White matter disease, unspecified")),
    "Medial meniscus tear.": Problem(
        "meniscus-tear", None, ("S83.241A", "Other tear of medial meniscus, current injury, right knee")),
    "Small joint effusion.": Problem("joint-effusion", None, ("M25.461", "Effusion, right knee")),
    "Right lower lobe opacity, consider pneumonia.": Problem(
        "pneumonia", ("233604007", "Pneumonia"), ("J18.9", "Pneumonia, unspecified organism"),
        Medication("308191", "amoxicillin 500 MG Oral Capsule",
                   "500 mg by mouth three times daily for 7 days")),
    "Cardiomegaly.": Problem("cardiomegaly", ("8186001", "Cardiomegaly"), ("I51.7", "Cardiomegaly")),
}

#: Radiology report codes (LOINC) by study description; others use 18748-4 "Diagnostic imaging study".
REPORT_CODES: dict[str, tuple[str, str]] = {
    "CT CHEST WITH CONTRAST": ("24628-0", "CT Chest W contrast IV"),
    "CT HEAD WITHOUT CONTRAST": ("30799-1", "CT Head WO contrast"),
    "MRI BRAIN": ("24590-2", "MR Brain"),
    "XR CHEST 2 VIEWS": ("36643-5", "XR Chest 2 Views"),
}
GENERIC_REPORT_CODE = ("18748-4", "Diagnostic imaging study")

#: Imaging procedure codes (SNOMED CT) by modality.
MODALITY_PROCEDURES: dict[str, tuple[str, str]] = {
    "CT": ("77477000", "Computerized axial tomography"),
    "MR": ("113091000", "Magnetic resonance imaging"),
    "CR": ("363680008", "Radiographic imaging procedure"),
}
BODY_SITES: dict[str, tuple[str, str]] = {
    "CHEST": ("51185008", "Thoracic structure"),
    "HEAD": ("69536005", "Head structure"),
    "BRAIN": ("12738006", "Brain structure"),
    "KNEE": ("6757004", "Structure of right knee region"),
}


@dataclass(frozen=True)
class Lab:
    key: str
    loinc: str
    display: str
    unit: str
    low: float
    high: float
    decimals: int


LABS: tuple[Lab, ...] = (
    Lab("hba1c", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 1),
    Lab("creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 2),
    Lab("hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 17.5, 1),
    Lab("ldl", "2089-1", "Cholesterol in LDL [Mass/volume] in Serum or Plasma", "mg/dL", 0.0, 99.0, 0),
    Lab("glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70.0, 99.0, 0),
    Lab("potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 1),
)

SMOKING = {
    "never": ("266919005", "Never smoked tobacco"),
    "former": ("8517006", "Ex-smoker"),
    "current": ("449868002", "Smokes tobacco daily"),
}

ALLERGIES: tuple[tuple[str, str, str, str, str], ...] = (
    # (category, system, code, display, reaction)
    ("medication", RXNORM, "7980", "penicillin G", "Hives"),
    ("food", SNOMED, "256349002", "Peanut - dietary", "Anaphylaxis"),
    ("environment", SNOMED, "111088007", "Latex", "Contact dermatitis"),
    ("medication", RXNORM, "10180", "sulfamethoxazole", "Skin rash"),
)
REACTIONS = {"Hives": ("247472004", "Hives"), "Anaphylaxis": ("39579001", "Anaphylaxis"),
             "Contact dermatitis": ("40275004", "Contact dermatitis"),
             "Skin rash": ("271807003", "Skin rash")}

VACCINES = {
    "influenza": ("140", "Influenza, seasonal, injectable, preservative free"),
    "covid": ("208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, "
                     "30 mcg/0.3mL dose"),
    "tdap": ("115", "Tdap"),
    "pcv13": ("133", "Pneumococcal conjugate PCV 13"),
}

CLINICIANS = ("Dr. Helen Park", "Dr. Marcus Webb", "Dr. Priya Raman", "Dr. Jonas Eberhardt")


def clinical_resources(plan: DemoPlan) -> list[Resource]:
    """Every FHIR resource of the demo EHR for ``plan``: each patient's chart, in a stable order."""
    out: list[Resource] = []
    for patient in plan.patients:
        out.extend(iter_patient_resources(plan, patient.id))
    return out


def iter_patient_resources(plan: DemoPlan, patient_id: str) -> Iterator[Resource]:
    """The chart of one patient of ``plan``, then the RelatedPersons of the caregivers acting for it."""
    chart = _Chart(plan.options.seed, plan.patient(patient_id)).build()
    yield from chart
    since = chart[0]["meta"]["lastUpdated"]  # the Patient resource: a caregiver is linked no earlier
    for user in plan.users:
        if is_caregiver(user) and patient_id in user.patient_ids:
            yield related_person(user, plan.patient(patient_id), since)


#: R4 ``id`` (R4 2.24.0.1 "id" data type)
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def is_caregiver(user: DemoUser) -> bool:
    """A login acting for several patients is a caregiver (a ``RelatedPerson`` of each); a login acting for
    one patient is that patient."""
    return len(user.patient_ids) > 1


def related_person_id(username: str, patient_id: str) -> str:
    """The logical id of the ``RelatedPerson`` linking caregiver ``username`` to ``patient_id``."""
    rid = f"{username}-{patient_id}"
    if not _FHIR_ID.match(rid):
        raise ValueError(f"{rid!r} is not a valid FHIR id (username and patient id must be [A-Za-z0-9-.])")
    return rid


def related_person(user: DemoUser, patient: DemoPatient, last_updated: str) -> Resource:
    """R4 ``RelatedPerson``: caregiver ``user`` acting for ``patient`` (relationship: the v3 RoleCode
    HPOWATT, healthcare power of attorney, which is what lets the caregiver act for the patient)."""
    given, _, family = user.display_name.rpartition(" ")
    name: dict[str, Any] = {"use": "official", "text": user.display_name,
                            "family": family or user.display_name}
    if given:
        name["given"] = given.split()
    return {
        "resourceType": "RelatedPerson",
        "id": related_person_id(user.username, patient.id),
        "meta": {"versionId": "1", "lastUpdated": last_updated},
        "active": True,
        "patient": {"reference": f"Patient/{patient.id}", "display": patient.display_name},
        "relationship": [concept(coding(V3_ROLE_CODE, "HPOWATT", "healthcare power of attorney"),
                                 text="Caregiver")],
        "name": [name],
    }


def _age(born: date, on: datetime) -> int:
    d = on.date()
    return d.year - born.year - ((d.month, d.day) < (born.month, born.day))


class _Chart:
    """One patient's record, built in a fixed order so ids and values are reproducible."""

    def __init__(self, seed: int, patient: DemoPatient) -> None:
        self.p = patient
        self.rng = random.Random(f"s4s-clinical:{seed}:{patient.id}")
        self.out: list[Resource] = []
        self.counters: dict[str, int] = {}
        self.ref = {"reference": f"Patient/{patient.id}", "display": patient.display_name}
        start = ANCHOR - timedelta(days=365 * HISTORY_YEARS)
        n_visits = 8
        step = (ANCHOR - timedelta(days=21) - start) / (n_visits - 1)
        self.visits = [
            (start + step * k + timedelta(days=self.rng.randrange(0, 20))).replace(
                hour=self.rng.choice((8, 9, 10, 11, 13, 14, 15, 16)), minute=self.rng.choice((0, 15, 30, 45)),
                second=0, microsecond=0)
            for k in range(n_visits)
        ]
        self.clinician = self.rng.choice(CLINICIANS)
        n_problems = self.rng.choice((1, 2, 2, 3))
        self.problems = self.rng.sample(CHRONIC, n_problems)
        self.keys = {pr.key for pr in self.problems}
        self.findings = [s for s in patient.studies if s.finding in FINDING_PROBLEMS]
        finding_keys = {FINDING_PROBLEMS[s.finding].key for s in self.findings}
        if "emphysema" in finding_keys or "pulmonary-nodule" in finding_keys:
            self.smoking = self.rng.choice(("former", "current"))
        else:
            self.smoking = self.rng.choice(("never", "never", "former", "current"))
        self.weight_kg = round(self.rng.uniform(55, 80) if patient.sex == "female" else
                               self.rng.uniform(68, 100), 1)
        self.height_cm = round(self.rng.uniform(155, 172) if patient.sex == "female" else
                               self.rng.uniform(168, 190), 1)

    # -- helpers -----------------------------------------------------------------------------------

    def _id(self, kind: str) -> str:
        n = self.counters.get(kind, 0) + 1
        self.counters[kind] = n
        return f"{self.p.id}-{kind}-{n:03d}"

    def _lag(self, when: datetime, lo_hours: float = 1, hi_hours: float = 72) -> datetime:
        lagged = when + timedelta(minutes=self.rng.randrange(int(lo_hours * 60), int(hi_hours * 60)))
        return min(lagged, ANCHOR)

    def _add(self, resource: Resource, updated: datetime, version: int = 1) -> Resource:
        resource["meta"] = {"versionId": str(version), "lastUpdated": instant(min(updated, ANCHOR))}
        self.out.append(resource)
        return resource

    # -- the chart ---------------------------------------------------------------------------------

    def build(self) -> list[Resource]:
        self._patient()
        reports = {s.study_uid: self._diagnostic_report(s) for s in self.p.studies}
        for s in self.p.studies:
            self._imaging_procedure(s, reports[s.study_uid])
        problem_ids = self._conditions(reports)
        self._medications(problem_ids)
        self._allergies()
        self._labs()
        self._vitals()
        self._smoking_status()
        self._other_procedures()
        self._immunizations()
        self._notes()
        return self.out

    def _patient(self) -> None:
        p = self.p
        self._add({
            "resourceType": "Patient",
            "id": p.id,
            "identifier": [{
                "use": "usual",
                "type": concept(coding(V2_0203, "MR", "Medical record number")),
                "system": MRN_SYSTEM,
                "value": p.mrn,
            }],
            "active": True,
            "name": [{"use": "official", "family": p.family, "given": [p.given]}],
            "telecom": [{"system": "phone", "value": f"555-01{int(p.mrn[-2:]):02d}", "use": "home"}],
            "gender": p.sex,
            "birthDate": p.birth_date.isoformat(),
            "address": [{"use": "home", "line": [f"{self.rng.randrange(10, 990)} Elm Street"],
                         "city": "Springfield", "state": "MA", "postalCode": "01101", "country": "US"}],
            "communication": [{
                "language": concept(coding("urn:ietf:bcp:47", "en-US", "English (United States)")),
                "preferred": True}],
        }, self._lag(self.visits[0], 0, 24 * 30))

    def _diagnostic_report(self, s: StudyPlan) -> Resource:
        code, display = REPORT_CODES.get(s.description, GENERIC_REPORT_CODE)
        issued = s.started + timedelta(minutes=self.rng.randrange(60, 36 * 60))
        text = (f"{s.description}\nDate: {s.started:%Y-%m-%d %H:%M} UTC\nAccession: {s.accession_number}\n"
                f"Patient: {self.p.display_name} ({self.p.mrn})\n\nFindings: {s.finding}\n"
                f"Impression: {s.finding}\n")
        rid = self._id("rad")
        report: Resource = {
            "resourceType": "DiagnosticReport",
            "id": rid,
            "identifier": [{"type": concept(coding(V2_0203, "ACSN", "Accession ID")),
                            "system": ACCESSION_SYSTEM, "value": s.accession_number}],
            "status": "final",
            "category": [concept(coding(LOINC, "LP29684-5", "Radiology")),
                         concept(coding(V2_0074, "RAD", "Radiology"))],
            "code": concept(coding(LOINC, code, display), text=s.description),
            "subject": self.ref,
            "effectiveDateTime": instant(s.started),
            "issued": instant(issued),
            "resultsInterpreter": [{"display": "Dr. Ada Lindgren, Radiology"}],
            "imagingStudy": [{
                "type": "ImagingStudy",
                "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{s.study_uid}"},
                "display": s.description,
            }],
            "conclusion": s.finding,
            "presentedForm": [{"contentType": "text/plain", "language": "en-US",
                               "data": base64.b64encode(text.encode()).decode("ascii"),
                               "title": f"{s.description} report"}],
        }
        problem = FINDING_PROBLEMS.get(s.finding)
        if problem and problem.snomed:
            report["conclusionCode"] = [concept(coding(SNOMED, *problem.snomed))]
        return self._add(report, issued)

    def _imaging_procedure(self, s: StudyPlan, report: Resource) -> None:
        proc: Resource = {
            "resourceType": "Procedure",
            "id": self._id("proc"),
            "status": "completed",
            "category": concept(coding(SNOMED, "103693007", "Diagnostic procedure")),
            "code": concept(coding(SNOMED, *MODALITY_PROCEDURES.get(s.modality, ("71388002", "Procedure"))),
                            text=s.description),
            "subject": self.ref,
            "performedDateTime": instant(s.started),
            "report": [{"reference": f"DiagnosticReport/{report['id']}", "display": s.description}],
        }
        if s.body_part in BODY_SITES:
            proc["bodySite"] = [concept(coding(SNOMED, *BODY_SITES[s.body_part]))]
        self._add(proc, self._lag(s.started, 0.5, 12))

    def _condition(self, problem: Problem, onset: datetime, category: str, evidence: str | None = None,
                   resolved: datetime | None = None) -> Resource:
        codings = [coding(SNOMED, *problem.snomed)] if problem.snomed else []
        codings.append(coding(ICD10CM, *problem.icd10))
        recorded = self._lag(onset, 1, 48)
        cond: Resource = {
            "resourceType": "Condition",
            "id": self._id("cond"),
            "clinicalStatus": concept(coding(CONDITION_CLINICAL, "active", "Active")),
            "verificationStatus": concept(coding(CONDITION_VERIFICATION, "confirmed", "Confirmed")),
            "category": [concept(coding(CONDITION_CATEGORY, category,
                                        "Problem List Item" if category == "problem-list-item"
                                        else "Encounter Diagnosis"))],
            "code": concept(*codings, text=(problem.snomed or problem.icd10)[1]),
            "subject": self.ref,
            "onsetDateTime": instant(onset),
            "recordedDate": instant(recorded),
            "recorder": {"display": self.clinician},
        }
        if evidence:
            cond["evidence"] = [{"detail": [{"reference": f"DiagnosticReport/{evidence}"}]}]
        updated, version = recorded, 1
        if resolved and resolved < ANCHOR:
            cond["clinicalStatus"] = concept(coding(CONDITION_CLINICAL, "resolved", "Resolved"))
            cond["abatementDateTime"] = instant(resolved)
            updated, version = self._lag(resolved, 1, 24), 2
        return self._add(cond, updated, version)

    def _conditions(self, reports: dict[str, Resource]) -> dict[str, tuple[Problem, Resource]]:
        """Chronic problems (onset before or early in the history) and imaging-finding problems."""
        found: dict[str, tuple[Problem, Resource]] = {}
        for k, problem in enumerate(self.problems):
            onset = self.visits[0] - timedelta(days=self.rng.randrange(0, 900)) if k == 0 else \
                self.visits[self.rng.randrange(0, 4)]
            found[problem.key] = (problem, self._condition(problem, onset, "problem-list-item"))
        for s in self.findings:
            problem = FINDING_PROBLEMS[s.finding]
            if problem.key in found:
                continue
            resolved = (s.started + timedelta(days=self.rng.randrange(21, 60))
                        if problem.key == "pneumonia" else None)
            found[problem.key] = (problem, self._condition(
                problem, s.started, "encounter-diagnosis", reports[s.study_uid]["id"], resolved))
        return found

    def _medications(self, problems: dict[str, tuple[Problem, Resource]]) -> None:
        for problem, cond in problems.values():
            med = problem.medication
            if med is None:
                continue
            start = datetime.fromisoformat(cond["onsetDateTime"].replace("Z", "+00:00"))
            start = max(start, self.visits[0]) + timedelta(hours=1)
            course = problem.key == "pneumonia"
            end = start + timedelta(days=7) if course else None
            medication = concept(coding(RXNORM, med.rxnorm, med.display))
            reason = [{"reference": f"Condition/{cond['id']}", "display": cond["code"]["text"]}]
            request: Resource = {
                "resourceType": "MedicationRequest",
                "id": self._id("medrx"),
                "status": "completed" if course else "active",
                "intent": "order",
                "category": [concept(coding(MEDREQ_CATEGORY, "community", "Community"))],
                "medicationCodeableConcept": medication,
                "subject": self.ref,
                "authoredOn": instant(start),
                "requester": {"display": self.clinician},
                "reasonReference": reason,
                "dosageInstruction": [{"text": med.dosage}],
                "dispenseRequest": {"numberOfRepeatsAllowed": 0 if course else 3,
                                    "quantity": {"value": 21 if course else 90, "unit": "{tbl}",
                                                 "system": UCUM, "code": "{tbl}"}},
            }
            self._add(request, self._lag(end, 1, 24) if end else self._lag(start, 0.1, 2), 2 if course else 1)
            asserted = self.visits[-1] if not course else self._lag(end or start, 24, 24 * 10)
            statement: Resource = {
                "resourceType": "MedicationStatement",
                "id": self._id("medst"),
                "status": "completed" if course else "active",
                "category": concept(coding(MEDSTATEMENT_CATEGORY, "community", "Community")),
                "medicationCodeableConcept": medication,
                "subject": self.ref,
                "effectivePeriod": {"start": instant(start), **({"end": instant(end)} if end else {})},
                "dateAsserted": instant(asserted),
                "informationSource": self.ref,
                "derivedFrom": [{"reference": f"MedicationRequest/{request['id']}"}],
                "reasonReference": reason,
                "dosage": [{"text": med.dosage}],
            }
            self._add(statement, self._lag(asserted, 0.1, 4))
        # an over-the-counter medicine the patient reports at the last visit
        otc = concept(coding(RXNORM, "313782", "acetaminophen 325 MG Oral Tablet"))
        when = self.visits[-1]
        self._add({
            "resourceType": "MedicationStatement",
            "id": self._id("medst"),
            "status": "active",
            "category": concept(coding(MEDSTATEMENT_CATEGORY, "patientspecified", "Patient Specified")),
            "medicationCodeableConcept": otc,
            "subject": self.ref,
            "effectiveDateTime": instant(when - timedelta(days=30)),
            "dateAsserted": instant(when),
            "informationSource": self.ref,
            "dosage": [{"text": "650 mg by mouth as needed for headache"}],
        }, self._lag(when, 0.1, 4))

    def _allergies(self) -> None:
        n = self.rng.choice((0, 1, 1, 2))
        when = self.visits[0]
        if n == 0:
            self._add({
                "resourceType": "AllergyIntolerance",
                "id": self._id("allergy"),
                "clinicalStatus": concept(coding(ALLERGY_CLINICAL, "active", "Active")),
                "verificationStatus": concept(coding(ALLERGY_VERIFICATION, "confirmed", "Confirmed")),
                "code": concept(coding(SNOMED, "716186003", "No known allergy")),
                "patient": self.ref,
                "recordedDate": instant(when),
            }, self._lag(when, 0.1, 8))
            return
        for category, system, code, display, reaction in self.rng.sample(ALLERGIES, n):
            self._add({
                "resourceType": "AllergyIntolerance",
                "id": self._id("allergy"),
                "clinicalStatus": concept(coding(ALLERGY_CLINICAL, "active", "Active")),
                "verificationStatus": concept(coding(ALLERGY_VERIFICATION, "confirmed", "Confirmed")),
                "type": "allergy",
                "category": [category],
                "criticality": "high" if reaction == "Anaphylaxis" else "low",
                "code": concept(coding(system, code, display)),
                "patient": self.ref,
                "recordedDate": instant(when),
                "recorder": {"display": self.clinician},
                "reaction": [{"manifestation": [concept(coding(SNOMED, *REACTIONS[reaction]))],
                              "severity": "severe" if reaction == "Anaphylaxis" else "mild"}],
            }, self._lag(when, 0.1, 8))

    def _lab_value(self, lab: Lab, k: int) -> float:
        rng, keys, t = self.rng, self.keys, k / max(len(self.visits) - 1, 1)
        female = self.p.sex == "female"
        if lab.key == "hba1c":
            v = 8.6 - 1.4 * t + rng.gauss(0, 0.25) if "diabetes" in keys else 5.3 + rng.gauss(0, 0.2)
        elif lab.key == "creatinine":
            base = 0.75 if female else 0.95
            v = 1.4 + 0.6 * t + rng.gauss(0, 0.08) if "ckd" in keys else base + rng.gauss(0, 0.08)
        elif lab.key == "hemoglobin":
            v = (13.2 if female else 14.8) - (1.2 * t if "ckd" in keys else 0) + rng.gauss(0, 0.4)
        elif lab.key == "ldl":
            v = (165 - 60 * min(t * 2, 1) + rng.gauss(0, 8) if "hyperlipidemia" in keys
                 else 95 + rng.gauss(0, 12))
        elif lab.key == "glucose":
            v = 150 - 25 * t + rng.gauss(0, 12) if "diabetes" in keys else 88 + rng.gauss(0, 7)
        else:
            v = 4.9 + 0.2 * t + rng.gauss(0, 0.2) if "ckd" in keys else 4.2 + rng.gauss(0, 0.25)
        return round(max(v, 0.1), lab.decimals)

    def _labs(self) -> None:
        for k, visit in enumerate(self.visits):
            collected = visit + timedelta(minutes=20)
            for lab in LABS:
                value = self._lab_value(lab, k)
                low, high = lab.low, lab.high
                if lab.key == "hemoglobin":
                    low, high = (12.0, 15.5) if self.p.sex == "female" else (13.5, 17.5)
                flag = "H" if value > high else "L" if value < low else "N"
                quantity = {"value": value, "unit": lab.unit, "system": UCUM, "code": lab.unit}
                issued = self._lag(collected, 2, 30)
                rng_range: dict[str, Any] = {"high": {**quantity, "value": high}}
                if low > 0:
                    rng_range["low"] = {**quantity, "value": low}
                self._add({
                    "resourceType": "Observation",
                    "id": self._id("lab"),
                    "status": "final",
                    "category": [concept(coding(OBSERVATION_CATEGORY, "laboratory", "Laboratory"))],
                    "code": concept(coding(LOINC, lab.loinc, lab.display)),
                    "subject": self.ref,
                    "effectiveDateTime": instant(collected),
                    "issued": instant(issued),
                    "valueQuantity": quantity,
                    "interpretation": [concept(coding(INTERPRETATION, flag, {"H": "High", "L": "Low",
                                                                               "N": "Normal"}[flag]))],
                    "referenceRange": [rng_range],
                }, issued)

    def _vital(self, when: datetime, code: str, display: str, **value: Any) -> None:
        self._add({
            "resourceType": "Observation",
            "id": self._id("vital"),
            "status": "final",
            "category": [concept(coding(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs"))],
            "code": concept(coding(LOINC, code, display)),
            "subject": self.ref,
            "effectiveDateTime": instant(when),
            **value,
        }, self._lag(when, 0.1, 6))

    def _vitals(self) -> None:
        hypertensive = "hypertension" in self.keys
        for k, visit in enumerate(self.visits):
            t = k / max(len(self.visits) - 1, 1)
            systolic = round((152 - 22 * t if hypertensive else 118) + self.rng.gauss(0, 6))
            diastolic = round((94 - 12 * t if hypertensive else 76) + self.rng.gauss(0, 4))
            mmhg = {"unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
            self._vital(visit, "85354-9", "Blood pressure panel with all children optional", component=[
                {"code": concept(coding(LOINC, "8480-6", "Systolic blood pressure")),
                 "valueQuantity": {"value": systolic, **mmhg}},
                {"code": concept(coding(LOINC, "8462-4", "Diastolic blood pressure")),
                 "valueQuantity": {"value": diastolic, **mmhg}},
            ])
            self._vital(visit, "8867-4", "Heart rate", valueQuantity={
                "value": round(72 + self.rng.gauss(0, 7)), "unit": "beats/minute", "system": UCUM,
                "code": "/min"})
            weight = round(self.weight_kg + (k - 3) * 0.6 + self.rng.gauss(0, 0.8), 1)
            self._vital(visit, "29463-7", "Body weight", valueQuantity={
                "value": weight, "unit": "kg", "system": UCUM, "code": "kg"})
            self._vital(visit, "8302-2", "Body height", valueQuantity={
                "value": self.height_cm, "unit": "cm", "system": UCUM, "code": "cm"})
            self._vital(visit, "39156-5", "Body mass index (BMI) [Ratio]", valueQuantity={
                "value": round(weight / (self.height_cm / 100) ** 2, 1), "unit": "kg/m2", "system": UCUM,
                "code": "kg/m2"})

    def _smoking_status(self) -> None:
        first = "current" if self.smoking in ("former", "current") else "never"
        for when, status in ((self.visits[0], first), (self.visits[-2], self.smoking)):
            self._add({
                "resourceType": "Observation",
                "id": self._id("smoke"),
                "status": "final",
                "category": [concept(coding(OBSERVATION_CATEGORY, "social-history", "Social History"))],
                "code": concept(coding(LOINC, "72166-2", "Tobacco smoking status")),
                "subject": self.ref,
                "effectiveDateTime": instant(when),
                "issued": instant(self._lag(when, 0.1, 2)),
                "valueCodeableConcept": concept(coding(SNOMED, *SMOKING[status])),
            }, self._lag(when, 0.1, 4))

    def _other_procedures(self) -> None:
        when = self.visits[self.rng.randrange(1, len(self.visits))] + timedelta(minutes=40)
        self._add({
            "resourceType": "Procedure",
            "id": self._id("proc"),
            "status": "completed",
            "category": concept(coding(SNOMED, "103693007", "Diagnostic procedure")),
            "code": concept(coding(SNOMED, "29303009", "Electrocardiographic procedure")),
            "subject": self.ref,
            "performedDateTime": instant(when),
            "performer": [{"actor": {"display": self.clinician}}],
        }, self._lag(when, 0.1, 6))
        if _age(self.p.birth_date, ANCHOR) >= 50:
            when = self.visits[self.rng.randrange(2, len(self.visits))] + timedelta(days=9)
            self._add({
                "resourceType": "Procedure",
                "id": self._id("proc"),
                "status": "completed",
                "category": concept(coding(SNOMED, "387713003", "Surgical procedure")),
                "code": concept(coding(SNOMED, "73761001", "Colonoscopy")),
                "subject": self.ref,
                "performedPeriod": {"start": instant(when), "end": instant(when + timedelta(minutes=35))},
                "outcome": concept(coding(SNOMED, "385669000", "Successful")),
            }, self._lag(when, 1, 48))

    def _immunization(self, vaccine: str, when: datetime) -> None:
        code, display = VACCINES[vaccine]
        self._add({
            "resourceType": "Immunization",
            "id": self._id("imm"),
            "status": "completed",
            "vaccineCode": concept(coding(CVX, code, display)),
            "patient": self.ref,
            "occurrenceDateTime": instant(when),
            "recorded": instant(when),
            "primarySource": True,
            "lotNumber": f"LOT{self.rng.randrange(10000, 99999)}",
            "doseQuantity": {"value": 0.5 if vaccine != "covid" else 0.3, "unit": "mL", "system": UCUM,
                             "code": "mL"},
        }, self._lag(when, 0.1, 24))

    def _immunizations(self) -> None:
        first_year = self.visits[0].year
        for year in range(first_year, ANCHOR.year):
            if self.rng.random() < 0.75:
                when = ANCHOR.replace(year=year, month=10, day=self.rng.randrange(1, 28), hour=10, minute=0)
                self._immunization("influenza", when)
        self._immunization("covid", ANCHOR.replace(year=2021, month=4, day=self.rng.randrange(1, 28), hour=9,
                                                   minute=30))
        self._immunization("tdap", self.visits[self.rng.randrange(0, 4)] + timedelta(minutes=50))
        if _age(self.p.birth_date, ANCHOR) >= 65:
            self._immunization("pcv13", self.visits[self.rng.randrange(2, 6)] + timedelta(minutes=55))

    def _notes(self) -> None:
        problems = [pr.snomed[1] if pr.snomed else pr.icd10[1] for pr in self.problems]
        meds = [pr.medication.display for pr in self.problems if pr.medication]
        for visit in (self.visits[0], self.visits[len(self.visits) // 2], self.visits[-1]):
            age = _age(self.p.birth_date, visit)
            text = (
                f"PROGRESS NOTE\nDate: {visit:%Y-%m-%d}\nPatient: {self.p.display_name}, {age}-year-old "
                f"{self.p.sex}, MRN {self.p.mrn}\nClinician: {self.clinician}\n\n"
                f"Active problems: {'; '.join(problems)}.\n"
                f"Medications: {'; '.join(meds) if meds else 'none'}.\n"
                f"Tobacco: {SMOKING[self.smoking][1].lower()}.\n\n"
                "Assessment and plan: stable; continue current treatment, labs at next visit.\n"
            )
            signed = self._lag(visit, 1, 30)
            self._add({
                "resourceType": "DocumentReference",
                "id": self._id("doc"),
                "status": "current",
                "docStatus": "final",
                "type": concept(coding(LOINC, "11506-3", "Progress note")),
                "category": [concept(coding(DOCREF_CATEGORY, "clinical-note", "Clinical Note"))],
                "subject": self.ref,
                "date": instant(signed),
                "author": [{"display": self.clinician}],
                "description": f"Progress note {visit:%Y-%m-%d}",
                "content": [{"attachment": {
                    "contentType": "text/plain", "language": "en-US",
                    "data": base64.b64encode(text.encode()).decode("ascii"),
                    "title": f"Progress note {visit:%Y-%m-%d}", "creation": instant(signed)}}],
                "context": {"period": {"start": instant(visit),
                                       "end": instant(visit + timedelta(minutes=30))}},
            }, signed)
