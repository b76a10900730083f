"Run the performance suite: `python -m bench [--quick] [--device cuda --shape 7b] [--real-only]` (lop.bench.main)."
import sys
from lop.bench import main

sys.exit(main())
