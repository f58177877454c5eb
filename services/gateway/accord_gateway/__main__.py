"""`python -m accord_gateway`: run the gateway until SIGTERM."""

import sys

from accord_gateway.bootstrap import build
from accord_gateway.settings import SERVICE, load
from accord_kit.runtime import main

if __name__ == "__main__":
    sys.exit(main(SERVICE, load, build))
