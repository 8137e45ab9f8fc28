import sys

from lstm_harness.cli import main

sys.exit(main())
