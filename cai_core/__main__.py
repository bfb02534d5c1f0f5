import sys

from cai_core.cli import main

sys.exit(main())
