"""``python -m plugin -i IN -o OUT [-m MODELS] [-l LEVEL]``: run the UAR report application once.

Inside a MAP the packager runs this package folder (``python3 /opt/holoscan/app``) with the
HOLOSCAN_* variables set.
"""

from plugin.app import UARReportApp

if __name__ == "__main__":
    UARReportApp().run()
