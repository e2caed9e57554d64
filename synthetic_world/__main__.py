"""python -m synthetic_world --out DIR ... (see the package docstring)."""
import sys

from .generate import main

sys.exit(main())
