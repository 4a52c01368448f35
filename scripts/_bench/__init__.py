"""The modules of scripts/bench, the benchmark harness of issues 3, 4 and 8.

cli (arguments, order, exit code) -> scenarios (who runs what, at which size) -> procs (fresh child processes
and ppservers, always killed) -> child.py (the one file that measures, in the process under test);
impls finds the implementations, report turns figures into tables, goals and JSON. Issue 8's long and
many-process scenarios (soak, fanout, fairness, and payload/cpu through a ppserver) are load_scenarios ->
child_load.py, the same way. Nothing here is part of the ppft packages, and nothing in packages/ may
import it.
"""
