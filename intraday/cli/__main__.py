"""`python -m intraday.cli`: the console script (the benchmarks run it so)."""

from intraday.cli import main

main()
