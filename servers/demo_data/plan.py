"""The demo data set's plan: patients, users and imaging studies, from a fixed seed.

Everything here is derived from :class:`DemoOptions` alone (no clock, no global random state), so the same
options give the same UIDs, names and dates on every machine. Pixel data and FHIR resources are
generated elsewhere from this plan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pydicom.uid import generate_uid

#: The instant the synthetic history ends; dates are spread over the years before it.
ANCHOR = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)

#: UID root for generated UIDs (pydicom's registered root; suffixes come from the seed).
UID_ROOT = "1.2.826.0.1.3680043.8.498."

_GIVEN_F = ["Amelia", "Grace", "Sofia", "Maya", "Chloe", "Hana", "Lucia", "Nora", "Ines", "Zara"]
_GIVEN_M = ["Oliver", "Mateo", "Kenji", "Arjun", "Liam", "Tomas", "Samuel", "Omar", "Felix", "Noah"]
_FAMILY = ["Rivera", "Okafor", "Lindqvist", "Tanaka", "Novak", "Haddad", "Moreau", "Castillo",
           "Brennan", "Kowalski", "Adeyemi", "Fischer", "Yamamoto", "Silva", "Petrov", "Nguyen"]


@dataclass(frozen=True)
class ModalityTemplate:
    modality: str
    description: str
    body_part: str
    series: tuple[str, ...]  # series descriptions
    sop_class_uid: str


#: Study kinds the generator picks from. SOP classes: CT Image, MR Image, Computed Radiography Image.
STUDY_KINDS: tuple[ModalityTemplate, ...] = (
    ModalityTemplate("CT", "CT CHEST WITH CONTRAST", "CHEST",
                     ("Axial 5mm", "Axial 1.25mm lung", "Coronal MPR"), "1.2.840.10008.5.1.4.1.1.2"),
    ModalityTemplate("CT", "CT HEAD WITHOUT CONTRAST", "HEAD", ("Axial brain", "Axial bone"),
                     "1.2.840.10008.5.1.4.1.1.2"),
    ModalityTemplate("MR", "MRI BRAIN", "BRAIN", ("T1 axial", "T2 axial", "FLAIR axial"),
                     "1.2.840.10008.5.1.4.1.1.4"),
    ModalityTemplate("MR", "MRI KNEE RIGHT", "KNEE", ("PD sagittal", "T2 coronal"),
                     "1.2.840.10008.5.1.4.1.1.4"),
    ModalityTemplate("CR", "XR CHEST 2 VIEWS", "CHEST", ("PA", "Lateral"),
                     "1.2.840.10008.5.1.4.1.1.1"),
)


@dataclass(frozen=True)
class DemoOptions:
    """Size and shape of the synthetic data set. Defaults start the demo in seconds.

    ``studies_per_patient`` etc. are inclusive ranges; give (n, n) for a fixed count (benchmarks do).
    ``rows``/``columns`` apply to CT and MR; CR images are ``2 * rows`` square.
    """

    seed: int = 20180709
    patients: int = 6
    studies_per_patient: tuple[int, int] = (0, 3)
    series_per_study: tuple[int, int] = (1, 3)
    instances_per_series: tuple[int, int] = (3, 8)
    rows: int = 64
    columns: int = 64
    modalities: tuple[str, ...] = ("CT", "MR", "CR")


@dataclass(frozen=True)
class SeriesPlan:
    series_uid: str
    number: int
    modality: str
    description: str
    sop_class_uid: str
    instance_uids: tuple[str, ...]
    rows: int
    columns: int


@dataclass(frozen=True)
class StudyPlan:
    study_uid: str
    accession_number: str
    started: datetime
    modality: str
    description: str
    body_part: str
    series: tuple[SeriesPlan, ...]
    #: a short finding used by the radiology DiagnosticReport and the condition it supports
    finding: str

    @property
    def number_of_instances(self) -> int:
        return sum(len(s.instance_uids) for s in self.series)


@dataclass(frozen=True)
class DemoPatient:
    id: str  # FHIR logical id
    mrn: str  # medical record number == DICOM PatientID
    family: str
    given: str
    sex: str  # FHIR administrative-gender: "male" | "female"
    birth_date: date
    studies: tuple[StudyPlan, ...]

    @property
    def dicom_name(self) -> str:
        return f"{self.family}^{self.given}"

    @property
    def display_name(self) -> str:
        return f"{self.given} {self.family}"


@dataclass(frozen=True)
class DemoUser:
    """A login of the demo EHR, and the patients it may act for (itself, or as a caregiver)."""

    username: str
    password: str
    display_name: str
    patient_ids: tuple[str, ...]


@dataclass(frozen=True)
class DemoPlan:
    options: DemoOptions
    patients: tuple[DemoPatient, ...]
    users: tuple[DemoUser, ...] = field(default=())

    def patient(self, patient_id: str) -> DemoPatient:
        for p in self.patients:
            if p.id == patient_id:
                return p
        raise KeyError(patient_id)

    def studies(self) -> list[tuple[DemoPatient, StudyPlan]]:
        return [(p, s) for p in self.patients for s in p.studies]


_FINDINGS = {
    "CT": ["No acute abnormality.", "Small pulmonary nodule, 4 mm, right upper lobe.",
           "Mild emphysematous changes.", "Hypodense liver lesion, likely cyst."],
    "MR": ["No acute intracranial abnormality.", "Scattered white matter hyperintensities.",
           "Medial meniscus tear.", "Small joint effusion."],
    "CR": ["Lungs are clear.", "Right lower lobe opacity, consider pneumonia.",
           "Cardiomegaly.", "No acute cardiopulmonary process."],
}


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(UID_ROOT, entropy_srcs=[str(seed), *map(str, parts)])


def make_plan(options: DemoOptions | None = None) -> DemoPlan:
    """The deterministic plan for ``options``."""
    o = options or DemoOptions()
    rng = random.Random(o.seed)
    kinds = [k for k in STUDY_KINDS if k.modality in o.modalities] or list(STUDY_KINDS)
    patients: list[DemoPatient] = []
    for i in range(o.patients):
        sex = "female" if i % 2 == 0 else "male"
        given = rng.choice(_GIVEN_F if sex == "female" else _GIVEN_M)
        family = _FAMILY[(i * 7 + rng.randrange(len(_FAMILY))) % len(_FAMILY)]
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60))
        pid = f"pat-{i + 1:03d}"
        mrn = f"MRN{100001 + i}"
        # the first two patients always have imaging, so every demo has something to show
        lo, hi = o.studies_per_patient
        n_studies = rng.randint(max(lo, 1) if i < 2 else lo, max(hi, 1) if i < 2 else hi)
        studies: list[StudyPlan] = []
        for j in range(n_studies):
            kind = kinds[rng.randrange(len(kinds))]
            started = ANCHOR - timedelta(days=rng.randrange(30, 365 * 6), minutes=rng.randrange(8 * 60))
            started = started.replace(second=0, microsecond=0)
            study_uid = _uid(o.seed, "study", i, j)
            n_series = min(rng.randint(*o.series_per_study), max(len(kind.series), o.series_per_study[1]))
            series: list[SeriesPlan] = []
            for k in range(n_series):
                n_inst = rng.randint(*o.instances_per_series)
                rows, cols = (o.rows * 2, o.columns * 2) if kind.modality == "CR" else (o.rows, o.columns)
                if kind.modality == "CR":
                    n_inst = 1
                series.append(SeriesPlan(
                    series_uid=_uid(o.seed, "series", i, j, k),
                    number=k + 1,
                    modality=kind.modality,
                    description=kind.series[k % len(kind.series)],
                    sop_class_uid=kind.sop_class_uid,
                    instance_uids=tuple(_uid(o.seed, "instance", i, j, k, n) for n in range(n_inst)),
                    rows=rows,
                    columns=cols,
                ))
            studies.append(StudyPlan(
                study_uid=study_uid,
                accession_number=f"ACC{o.seed % 1000:03d}{i + 1:03d}{j + 1:02d}",
                started=started,
                modality=kind.modality,
                description=kind.description,
                body_part=kind.body_part,
                series=tuple(series),
                finding=rng.choice(_FINDINGS[kind.modality]),
            ))
        studies.sort(key=lambda s: s.started)
        patients.append(DemoPatient(pid, mrn, family, given, sex, birth, tuple(studies)))
    return DemoPlan(o, tuple(patients), _users(patients))


def _users(patients: list[DemoPatient]) -> tuple[DemoUser, ...]:
    """One login per patient acting for itself, plus a caregiver acting for the first two patients."""
    users = [
        DemoUser(p.given.lower() + str(n + 1), "demo-" + p.given.lower(), p.display_name, (p.id,))
        for n, p in enumerate(patients)
    ]
    if len(patients) >= 2:
        users.insert(0, DemoUser("caregiver", "demo-caregiver", "Casey Caregiver",
                                 (patients[0].id, patients[1].id)))
    return tuple(users)
