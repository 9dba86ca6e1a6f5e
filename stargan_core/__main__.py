"""``python -m stargan_core`` runs the command line (see ``cli.py``)."""
import sys

from .cli import main

sys.exit(main())
