import sys

from catret_pipeline.cli.main import main

sys.exit(main())
