import sys

from jupyter_pipeline.cli import main

sys.exit(main())
