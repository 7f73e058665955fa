import sys

from tlcut.cli import main

sys.exit(main())
