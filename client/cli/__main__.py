"""`python -m lesionseg.client.cli`: the `lesionseg` command."""

import sys

from lesionseg.client.cli.main import main

sys.exit(main())
