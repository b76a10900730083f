"Run the performance suite: `python -m bench [--quick] [--device cuda --shape 7b]` (same as `lop bench`)."
import sys
from lop.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
