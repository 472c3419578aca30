"""``python -m plugin -i IN -o OUT [-m MODELS] [-l LEVEL]``: run the UAR report application once.

Inside a MAP the packager runs this package folder (``python3 /opt/holoscan/app``) with the
HOLOSCAN_* variables set. Library messages are logged without their text (plugin/redact.py).
"""

from plugin.app import UARReportApp
from plugin.redact import redact_library_logs

if __name__ == "__main__":
    redact_library_logs()
    UARReportApp().run()
