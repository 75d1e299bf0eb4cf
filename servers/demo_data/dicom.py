"""Real DICOM Part 10 instances for the demo plan (PS3.10 files, PS3.3 IODs: CT, MR, CR Image).

Every instance of a :class:`~servers.demo_data.plan.StudyPlan` is built from the plan alone: UIDs, patient
and study attributes come from the plan; pixel data is a numeric phantom (ellipses in the spirit of the
Shepp-Logan head phantom) whose shape varies with the slice position, so a series looks like a volume.
Geometry follows the Image Plane Module (PS3.3 C.7.6.2): ImagePositionPatient, ImageOrientationPatient,
PixelSpacing, SliceThickness, SliceLocation. Pixels are 16-bit MONOCHROME2, written Explicit VR Little
Endian. Nothing depends on the clock or on global random state: the same plan gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from servers.demo_data.plan import DemoPatient, DemoPlan, SeriesPlan, StudyPlan

#: Implementation Class UID / version name written in every file meta header (PS3.7 D.3.3.2).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"
IMPLEMENTATION_VERSION = "S4S_JUPYTER_01"


@dataclass(frozen=True)
class Geometry:
    """Image plane of one slice (PS3.3 C.7.6.2), in millimetres in the patient coordinate system."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    slice_thickness: float
    slice_location: float


def _stable_int(*parts: object) -> int:
    """A deterministic integer from ``parts`` (Python's hash() is salted per process)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _orientation(series: SeriesPlan) -> tuple[float, float, float, float, float, float]:
    d = series.description.lower()
    if "sagittal" in d:
        return (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    if "coronal" in d:
        return (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def geometry(series: SeriesPlan, index: int) -> Geometry:
    """Geometry of slice ``index`` of ``series``: a field of view centred on the origin, slices along the
    normal of the image plane."""
    fov = 350.0 if series.modality == "CT" else 240.0 if series.modality == "MR" else 430.0
    spacing = (fov / series.rows, fov / series.columns)  # (row spacing, column spacing)
    thickness = 1.25 if "1.25" in series.description else 5.0 if series.modality == "CT" else 4.0
    o = _orientation(series)
    row = np.array(o[:3])
    col = np.array(o[3:])
    normal = np.cross(row, col)
    n = len(series.instance_uids)
    location = (index - (n - 1) / 2.0) * thickness
    origin = -row * (fov / 2.0) - col * (fov / 2.0) + normal * location
    pos = tuple(round(float(v), 4) for v in origin)
    return Geometry((pos[0], pos[1], pos[2]), o, spacing, thickness, round(location, 4))


# (centre x, centre y, semi-axis a, semi-axis b, angle in degrees, relative intensity), in [-1, 1] units
_ELLIPSES = (
    (0.0, 0.0, 0.69, 0.92, 0.0, 1.0),
    (0.0, -0.0184, 0.6624, 0.874, 0.0, -0.8),
    (0.22, 0.0, 0.11, 0.31, -18.0, -0.2),
    (-0.22, 0.0, 0.16, 0.41, 18.0, -0.2),
    (0.0, 0.35, 0.21, 0.25, 0.0, 0.1),
    (0.0, 0.1, 0.046, 0.046, 0.0, 0.1),
    (-0.08, -0.605, 0.046, 0.023, 0.0, 0.1),
    (0.06, -0.605, 0.023, 0.046, 0.0, 0.1),
)


@lru_cache(maxsize=16)
def _axes(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [-1, 1]: a column vector of y and a row vector of x (broadcast, never a full grid)."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
    return y, x


def _window(axis: np.ndarray, centre: float, radius: float) -> slice:
    """The index range of ``axis`` (sorted) within ``centre +- radius``."""
    flat = axis.ravel()
    low = int(np.searchsorted(flat, centre - radius))
    return slice(low, int(np.searchsorted(flat, centre + radius, "right")))


def phantom(rows: int, columns: int, z: float, seed: int) -> np.ndarray:
    """A Shepp-Logan-like phantom slice at relative height ``z`` in [-1, 1], as intensities in [0, 1].

    The outer ellipses shrink towards the ends of the volume, the inner ones move with ``z``; ``seed``
    shifts a small lesion so that different series do not look identical. Each ellipse is drawn only
    inside its bounding box, so a 512x512 slice takes a few milliseconds.
    """
    y, x = _axes(rows, columns)
    img = np.zeros((rows, columns), dtype=np.float32)
    scale = float(np.sqrt(max(1.0 - 0.6 * z * z, 0.05)))
    for cx, cy, a, b, angle, value in _ELLIPSES:
        t = np.deg2rad(angle)
        cyz = cy + 0.15 * z
        radius = max(a, b) * scale
        rs, cs = _window(y, cyz, radius), _window(x, cx, radius)
        yy, xx = y[rs] - cyz, x[:, cs] - cx
        xr = xx * np.cos(t) + yy * np.sin(t)
        yr = -xx * np.sin(t) + yy * np.cos(t)
        inside = (xr / (a * scale)) ** 2 + (yr / (b * scale)) ** 2 <= 1.0
        img[rs, cs] += np.float32(value) * inside
    lx = ((seed % 200) / 100.0 - 1.0) * 0.4
    ly = (((seed // 200) % 200) / 100.0 - 1.0) * 0.4
    r = 0.08 * float(np.cos(z * 1.5))
    if r > 0:
        rs, cs = _window(y, ly, r), _window(x, lx, r)
        img[rs, cs] += np.float32(0.25) * (((x[:, cs] - lx) ** 2 + (y[rs] - ly) ** 2) <= r * r)
    # a gentle deterministic texture so compression and windowing have something to do
    img += np.float32(0.02) * np.sin(x * 17.0 + seed % 7) * np.cos(y * 13.0 + z * 3.0)
    return np.clip(img, 0.0, 1.0)


def _radiograph(rows: int, columns: int, seed: int) -> np.ndarray:
    """A chest-radiograph-like image in [0, 1]: a bright mediastinum, darker lungs, ribs."""
    y, x = np.mgrid[-1.0 : 1.0 : rows * 1j, -1.0 : 1.0 : columns * 1j]
    img = 0.85 - 0.25 * (x**2 + 0.5 * y**2)
    lungs = ((np.abs(x) - 0.42) / 0.3) ** 2 + (y / 0.75) ** 2 <= 1.0
    img[lungs] -= 0.45
    img[(np.abs(x) < 0.16) & (y > -0.7)] += 0.1
    img += 0.06 * (np.sin(y * 28.0 + (seed % 5)) > 0.7) * lungs
    heart = ((x + 0.12) / 0.28) ** 2 + ((y - 0.25) / 0.3) ** 2 <= 1.0
    img[heart] += 0.3
    return np.clip(img, 0.0, 1.0)


def _pixels(series: SeriesPlan, index: int) -> tuple[np.ndarray, float, float, float, float]:
    """Stored values (uint16), rescale slope/intercept and window centre/width for slice ``index``."""
    seed = _stable_int(series.series_uid) % 40000
    n = len(series.instance_uids)
    z = 0.0 if n == 1 else -0.9 + 1.8 * index / (n - 1)
    if series.modality == "CT":
        img = phantom(series.rows, series.columns, z, seed)
        hu = -1000.0 + img * 2000.0  # air .. bone
        stored = np.round(hu + 1024.0).astype(np.uint16)
        lung = "lung" in series.description.lower()
        bone = "bone" in series.description.lower()
        centre, width = (-600.0, 1500.0) if lung else (300.0, 1500.0) if bone else (40.0, 400.0)
        return stored, 1.0, -1024.0, centre, width
    if series.modality == "MR":
        img = phantom(series.rows, series.columns, z, seed)
        d = series.description.lower()
        if "t2" in d or "flair" in d:
            img = np.where(img > 0.0, 1.05 - img, 0.0)
        stored = np.round(img * 1200.0).astype(np.uint16)
        return stored, 1.0, 0.0, 600.0, 1200.0
    img = _radiograph(series.rows, series.columns, seed)
    if "lateral" in series.description.lower():
        img = img.T.copy()
    stored = np.round(img * 4095.0).astype(np.uint16)
    return stored, 1.0, 0.0, 2048.0, 4096.0


def _ct_technique(series: SeriesPlan, index: int) -> dict[str, float]:
    """Deterministic CT acquisition technique (KVP, mA, exposure, CTDIvol) for cohort analyses."""
    h = _stable_int("technique", series.series_uid)
    kvp = (80.0, 100.0, 120.0, 140.0)[h % 4]
    ma = 150.0 + (h >> 8) % 250 + 10.0 * np.sin(index)
    time_ms = 500.0 + (h >> 16) % 500
    exposure = ma * time_ms / 1000.0
    ctdi = round(exposure * (kvp / 120.0) ** 2 * 0.08, 2)
    return {"KVP": kvp, "XRayTubeCurrent": round(float(ma)), "ExposureTime": round(time_ms),
            "Exposure": round(float(exposure)), "CTDIvol": float(ctdi)}


def make_dataset(patient: DemoPatient, study: StudyPlan, series: SeriesPlan, index: int) -> Dataset:
    """The dataset (with file meta) of instance ``index`` of ``series``: a CT, MR or CR Image IOD."""
    sop_uid = series.instance_uids[index]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(series.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if series.modality == "CT" else "OTHER"]
    ds.SOPClassUID = series.sop_class_uid
    ds.SOPInstanceUID = sop_uid
    date = study.started.strftime("%Y%m%d")
    time = study.started.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
    ds.StudyTime = time
    ds.SeriesTime = study.started.replace(minute=(study.started.minute + series.number) % 60).strftime(
        "%H%M%S")
    ds.ContentTime = ds.InstanceCreationTime = ds.SeriesTime
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = "S4S Synthetic"
    ds.InstitutionName = "S4S Demo Hospital"
    ds.ReferringPhysicianName = "Referring^Demo"
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.PatientName = patient.dicom_name
    ds.PatientID = patient.mrn
    ds.IssuerOfPatientID = "S4S-DEMO"
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = "F" if patient.sex == "female" else "M" if patient.sex == "male" else "O"
    age = study.started.year - patient.birth_date.year - (
        (study.started.month, study.started.day) < (patient.birth_date.month, patient.birth_date.day))
    ds.PatientAge = f"{max(age, 0):03d}Y"
    ds.BodyPartExamined = study.body_part
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = study.accession_number[-6:]
    ds.SeriesNumber = series.number
    ds.InstanceNumber = index + 1
    ds.FrameOfReferenceUID = series.series_uid + ".0" if len(series.series_uid) < 62 else study.study_uid
    ds.PositionReferenceIndicator = ""

    stored, slope, intercept, centre, width = _pixels(series, index)
    if series.modality == "CR":
        ds.PatientOrientation = ["L", "F"] if "lateral" not in series.description.lower() else ["P", "F"]
        ds.ViewPosition = "LL" if "lateral" in series.description.lower() else "PA"
        ds.ImagerPixelSpacing = [0.15 * 1024 / series.rows] * 2
        ds.PixelSpacing = ds.ImagerPixelSpacing
        ds.KVP = 110.0 if ds.ViewPosition == "LL" else 120.0
        ds.ExposureTime = 10
        ds.XRayTubeCurrent = 250
        ds.Exposure = 3
    else:
        g = geometry(series, index)
        ds.ImagePositionPatient = list(g.position)
        ds.ImageOrientationPatient = list(g.orientation)
        ds.PixelSpacing = [round(g.pixel_spacing[0], 6), round(g.pixel_spacing[1], 6)]
        ds.SliceThickness = g.slice_thickness
        ds.SliceLocation = g.slice_location
        if series.modality == "CT":
            for keyword, value in _ct_technique(series, index).items():
                setattr(ds, keyword, value)
            ds.ConvolutionKernel = "LUNG" if "lung" in series.description.lower() else "STANDARD"
        else:
            ds.MagneticFieldStrength = 3.0 if "brain" in study.body_part.lower() else 1.5
            d = series.description.lower()
            ds.RepetitionTime = 500.0 if "t1" in d else 9000.0 if "flair" in d else 4000.0
            ds.EchoTime = 12.0 if "t1" in d else 90.0
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = series.rows
    ds.Columns = series.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if series.modality == "CR" else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = slope
    if series.modality == "CT":
        ds.RescaleType = "HU"
    ds.WindowCenter = centre
    ds.WindowWidth = width
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file (preamble, ``DICM``, file meta group, Explicit VR Little Endian)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def instance_bytes(patient: DemoPatient, study: StudyPlan, series: SeriesPlan, index: int) -> bytes:
    """The Part 10 bytes of instance ``index`` of ``series``."""
    return dataset_bytes(make_dataset(patient, study, series, index))


def iter_study(patient: DemoPatient, study: StudyPlan) -> Iterator[tuple[str, bytes]]:
    """``(sop_instance_uid, part10_bytes)`` for every instance of one study, one at a time."""
    for series in study.series:
        for index, uid in enumerate(series.instance_uids):
            yield uid, instance_bytes(patient, study, series, index)


def iter_plan(plan: DemoPlan) -> Iterator[tuple[str, bytes]]:
    """``(sop_instance_uid, part10_bytes)`` for every instance of the plan, streaming (never all at once),
    so benchmarks can generate gigabytes."""
    for patient, study in plan.studies():
        yield from iter_study(patient, study)


def plan_size(plan: DemoPlan) -> int:
    """Number of instances :func:`iter_plan` yields."""
    return sum(study.number_of_instances for _, study in plan.studies())
