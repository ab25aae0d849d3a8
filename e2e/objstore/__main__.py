import sys

from e2e.objstore import main

sys.exit(main())
