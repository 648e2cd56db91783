"""`python -m services ...` entry point."""
import sys

from services.cli import main

sys.exit(main())
