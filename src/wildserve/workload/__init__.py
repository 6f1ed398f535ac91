"""Workloads: trace readers (Mooncake, Qwen-Bailian, WEKA, Azure) -> Request, transforms, synthetic.

Every reader streams one ``Request`` type in arrival order; a trace is named by a spec
(``builtin:NAME``, ``FORMAT:PATH`` or a sniffed path, see ``formats``), and every consumer (the
simulator, the gateway's replayer, the experiments) reads traces only through ``load_trace`` /
``iter_trace``.

Add a trace format in one file plus a test:

1. write a streaming reader and a sniff test in ``workload/NAME.py`` and register them, e.g. for a
   CSV of ``arrival_s,prompt_tokens,output_tokens`` rows::

       from wildserve.errors import TraceFormatError
       from wildserve.workload.formats import FORMATS, TraceFormat
       from wildserve.workload.request import Request

       HEADER = "arrival_s,prompt_tokens,output_tokens"


       def read_simple_csv(path, time_scale: float = 1.0):
           \"\"\"Rows after the header; no prefix ids. ``time_scale`` stretches arrivals.\"\"\"
           prev = 0.0
           with open(path) as fh:
               next(fh, None)
               for request_id, line in enumerate(fh):
                   lineno, cells = request_id + 2, line.strip().split(",")
                   try:
                       arrival_s, prompt, output = float(cells[0]), int(cells[1]), int(cells[2])
                   except (ValueError, IndexError):
                       raise TraceFormatError(str(path), lineno, None, f"not {HEADER}") from None
                   if arrival_s < prev:
                       raise TraceFormatError(str(path), lineno, "arrival_s", "out of order")
                   prev = arrival_s
                   yield Request(request_id, arrival_s * time_scale, prompt, output)


       def _sniff(path, head: bytes) -> bool:
           return head.startswith(HEADER.encode())


       FORMATS.add("simple-csv", TraceFormat("simple-csv", read_simple_csv, _sniff, HEADER))

   A reader's keyword arguments are the trace's ``-o KEY=VALUE`` options; a bad row raises
   ``TraceFormatError`` naming the file, the line and the field;
2. import the module in ``formats.py`` beside the others; ``simple-csv:PATH`` (or the bare path,
   sniffed) then works in every command;
3. test it on small files, good and bad (``tests/workload``; ``tests/workload/test_recipe.py`` runs
   this very recipe).
"""

from wildserve.workload.formats import (
    BUILTINS,
    DEFAULT_TRACE,
    FORMATS,
    iter_trace,
    load_trace,
    renumber,
)
from wildserve.workload.request import Request
from wildserve.workload.synthetic import LengthDist, SyntheticConfig, synthetic_workload
from wildserve.workload.transforms import limit, poisson_retime, rate_scale, sample, window

__all__ = [
    "BUILTINS",
    "DEFAULT_TRACE",
    "FORMATS",
    "LengthDist",
    "Request",
    "SyntheticConfig",
    "iter_trace",
    "limit",
    "load_trace",
    "poisson_retime",
    "rate_scale",
    "renumber",
    "sample",
    "synthetic_workload",
    "window",
]
