"""MONAI Deploy operators of the UAR report application.

``study_loader`` (DICOM folder -> chest studies or rejections), ``inference`` (UAR report
generation), ``sr_writer`` (TID 2000 Enhanced SR), ``pdf_writer`` (optional Encapsulated PDF) and
``maps_writer`` (optional attention-map Secondary Captures).
"""

from operators.inference import StudyReport, UARInferenceOperator, find_checkpoint, load_generator
from operators.maps_writer import MapsWriterOperator, build_sc, write_maps
from operators.pdf_writer import PDFWriterOperator, build_pdf_dataset, render_pdf
from operators.sr_writer import SRWriterOperator, WrittenInstance, build_sr
from operators.study_loader import (
    CXRStudy,
    CXRStudyLoaderOperator,
    Rejection,
    SourceImage,
    classify_view,
    load_studies,
    write_rejection,
)

__all__ = [
    "CXRStudy",
    "CXRStudyLoaderOperator",
    "MapsWriterOperator",
    "PDFWriterOperator",
    "Rejection",
    "SRWriterOperator",
    "SourceImage",
    "StudyReport",
    "UARInferenceOperator",
    "WrittenInstance",
    "build_pdf_dataset",
    "build_sc",
    "build_sr",
    "classify_view",
    "find_checkpoint",
    "load_generator",
    "load_studies",
    "render_pdf",
    "write_maps",
    "write_rejection",
]
