"""`python -m stasc push|iterations|push-metric ...`: runs the command line in stasc.cli.hub."""

import sys

from stasc.cli.hub import main

if __name__ == "__main__":
    sys.exit(main())
