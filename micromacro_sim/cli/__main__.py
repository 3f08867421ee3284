"""``python -m micromacro_sim.cli``: the ``micromacro`` command."""

import sys

from micromacro_sim.cli.main import main

sys.exit(main())
