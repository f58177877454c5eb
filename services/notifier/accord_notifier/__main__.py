"""`python -m accord_notifier`: run the notifier until SIGTERM."""

import sys

from accord_kit.runtime import main
from accord_notifier.bootstrap import build
from accord_notifier.settings import SERVICE, load

if __name__ == "__main__":
    sys.exit(main(SERVICE, load, build))
