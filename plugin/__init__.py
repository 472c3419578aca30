"""UAR Report Node plugin: the MONAI Deploy application (``plugin.app``, ``plugin.runner``) and the
DICOM node (``plugin.node``).

Kept import-light: importing ``plugin`` loads neither Holoscan nor torch. It does raise the process's
soft stack limit (RLIMIT_STACK) to the 32 MiB that Holoscan asks for, within the hard limit: Holoscan
warns on stderr at import when the limit is lower, and the node's worker processes, started later,
inherit the raised limit.
"""

import resource

HOLOSCAN_STACK_BYTES = 32 * 1024 * 1024  # Holoscan's recommended minimum stack size


def _raise_stack_limit() -> None:
    """Raise the soft RLIMIT_STACK to :data:`HOLOSCAN_STACK_BYTES` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= HOLOSCAN_STACK_BYTES:
        return
    target = HOLOSCAN_STACK_BYTES if hard == resource.RLIM_INFINITY else min(HOLOSCAN_STACK_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_STACK, (target, hard))


_raise_stack_limit()
