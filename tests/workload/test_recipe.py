"""The "add a trace format" recipe of ``wildserve.workload``, run as its docstring shows it.

The recipe's reader, in a file of its own, loads by ``FORMAT:PATH`` and by a sniffed path, takes
its keyword argument as a reader option, and reports a bad row as file, line and field.
"""

from __future__ import annotations

import json

import wildserve.workload
from tests.recipes import recipe_code, run_recipe

DRIVER = """
import json
import sys

from wildserve.errors import TraceFormatError
from wildserve.workload import load_trace

good, bad = sys.argv[1:]
spec = load_trace(f"simple-csv:{good}")
sniffed = load_trace(good, time_scale=2.0)
try:
    load_trace(bad)
    error = None
except TraceFormatError as exc:
    error = [str(exc), exc.line, exc.field]
print(json.dumps({
    "spec": [[r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens] for r in spec],
    "sniffed": [r.arrival_s for r in sniffed],
    "error": error,
}))
"""


def test_the_recipe_is_one_reader_and_a_registration_in_a_code_block():
    code = recipe_code(wildserve.workload.__doc__)
    assert "def read_simple_csv(" in code and 'FORMATS.add("simple-csv"' in code


def test_a_format_from_the_recipe_loads_sniffs_takes_options_and_names_bad_rows(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    header = "arrival_s,prompt_tokens,output_tokens\n"
    good.write_text(header + "0.0,100,10\n0.5,2000,1\n1.25,30,300\n")
    bad.write_text(header + "0.0,100,10\n0.5,lots,1\n")
    driver = DRIVER.replace("sys.argv[1:]", repr([str(good), str(bad)]))
    out = json.loads(run_recipe(wildserve.workload.__doc__, "simple_csv", driver, tmp_path))
    assert out["spec"] == [[0, 0.0, 100, 10], [1, 0.5, 2000, 1], [2, 1.25, 30, 300]]
    assert out["sniffed"] == [0.0, 1.0, 2.5]
    message, line, field = out["error"]
    assert message.startswith(f"{bad}:3:") and line == 3 and field is None
