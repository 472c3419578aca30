"""UAR: Unify, Align and Refine — radiology report generation from chest radiographs.

The model package. It never imports MONAI Deploy or networking code; the operators and the DICOM
node build on its public API: :class:`uar.generator.ReportGenerator` and :class:`uar.generator.Report`.
"""

__version__ = "0.1.0"
