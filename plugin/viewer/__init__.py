"""The viewer stack: OHIF v3 beside Orthanc and the node, for the demo, integration tests and evaluation."""
