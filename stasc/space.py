"""`python -m stasc.space deploy|assemble ...`: runs the command line in stasc.cli.space."""

import sys

from stasc.cli.space import main

if __name__ == "__main__":
    sys.exit(main())
