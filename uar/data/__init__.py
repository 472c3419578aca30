"""Data side of UAR: DICOM pixels, image files, R2Gen / MIMIC-CXR datasets, synthetic data.

Import the sub-modules directly (``uar.data.images``, ``uar.data.dicom_pixels``, ``uar.data.r2gen``,
``uar.data.mimic``); this package imports nothing itself so that light users stay light.
"""
