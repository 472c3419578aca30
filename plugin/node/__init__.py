"""The UAR DICOM node: storage SCP, durable queue, app workers, SR export, metrics.

Run it with ``uar node run --config node.yaml``; see docs/node.md. Public entry points:
:class:`plugin.node.service.NodeService`, :func:`plugin.node.config.load_config`.
"""
