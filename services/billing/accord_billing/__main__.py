"""`python -m accord_billing`: run the billing service until SIGTERM."""

import sys

from accord_billing.bootstrap import build
from accord_billing.settings import SERVICE, load
from accord_kit.runtime import main

if __name__ == "__main__":
    sys.exit(main(SERVICE, load, build))
