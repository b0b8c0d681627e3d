import sys

from ._training._cli import main

sys.exit(main())
