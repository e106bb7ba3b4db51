import sys

from multipass_double.cli import main

sys.exit(main(sys.argv[1:]))
