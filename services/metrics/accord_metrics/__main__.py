"""`python -m accord_metrics`: run the metrics service until SIGTERM."""

import sys

from accord_kit.runtime import main
from accord_metrics.bootstrap import build
from accord_metrics.settings import SERVICE, load

if __name__ == "__main__":
    sys.exit(main(SERVICE, load, build))
