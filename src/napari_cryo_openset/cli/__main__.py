"""``python -m napari_cryo_openset.cli``."""

import sys

from . import main

sys.exit(main())
