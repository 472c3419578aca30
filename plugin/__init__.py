"""UAR Report Node plugin: the MONAI Deploy application (``plugin.app``, ``plugin.runner``) and the
DICOM node (``plugin.node``).

Kept import-light: importing ``plugin`` loads neither Holoscan nor torch.
"""
