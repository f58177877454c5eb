"""`python -m accord_agreements`: run the agreements service until SIGTERM."""

import sys

from accord_agreements.bootstrap import build
from accord_agreements.settings import SERVICE, load
from accord_kit.runtime import main

if __name__ == "__main__":
    sys.exit(main(SERVICE, load, build))
