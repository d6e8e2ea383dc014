import sys

from rtinst.cli import main

sys.exit(main())
