"""The executable's entry point (PyInstaller freezes this file): the ``limitline`` command."""

import multiprocessing
import sys

from supervisors.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
