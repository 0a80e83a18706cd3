"""`python -m stasc.space deploy|assemble ...`: the Space command line (stasc.hub.space.main)."""

import sys

from stasc.hub.space import main

if __name__ == "__main__":
    sys.exit(main())
