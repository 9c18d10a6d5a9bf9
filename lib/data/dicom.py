"""Write a NIfTI volume as a DICOM MR series (one slice per file), geometry preserved, for PACS tests and demos."""

from __future__ import annotations

import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
INT16_MAX = 32000


def _series_header(patient_id: str, study_uid: str, series_uid: str, description: str) -> Dataset:
    today = datetime.date.today().strftime("%Y%m%d")
    ds = Dataset()
    ds.PatientName, ds.PatientID = patient_id, patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.StudyID, ds.SeriesNumber, ds.AccessionNumber = "1", 1, ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality, ds.SeriesDescription, ds.StudyDescription = "MR", description, "seg3d sample"
    ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = "", "", "O"
    ds.SOPClassUID = MRImageStorage
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def nifti_to_dicom_series(nifti: Path, out_dir: Path, patient_id: str, study_uid: str | None = None,
                          description: str = "T1") -> list[Path]:
    """Write ``nifti`` as an MR series in ``out_dir``; returns the files. Intensities are stored as int16 with a
    rescale slope; slice ``k`` is voxel plane ``[:, :, k]`` with columns along the first voxel axis."""
    image = nib.load(str(nifti))
    volume = np.asarray(image.dataobj, dtype=np.float64)
    affine = RAS_TO_LPS @ image.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    directions = affine[:3, :3] / spacing
    slope = max(float(np.abs(volume).max()), 1e-6) / INT16_MAX
    header = _series_header(patient_id, study_uid or generate_uid(), generate_uid(), description)
    header.Rows, header.Columns = volume.shape[1], volume.shape[0]
    header.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
    header.SliceThickness = float(spacing[2])
    header.ImageOrientationPatient = [float(v) for v in (*directions[:, 0], *directions[:, 1])]
    header.RescaleSlope, header.RescaleIntercept, header.RescaleType = f"{slope:.10g}", 0, "US"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.update(header)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in (affine @ [0, 0, k, 1])[:3]]
        pixels = np.round(volume[:, :, k].T / float(ds.RescaleSlope)).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.is_little_endian, ds.is_implicit_VR = True, False
        path = out_dir / f"{k:04d}.dcm"
        ds.save_as(str(path), write_like_original=False)
        files.append(path)
    return files
