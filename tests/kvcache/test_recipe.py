"""The "add a policy" recipe of ``wildserve.kvcache``: one file with a key, and numba's disk cache.

A policy written the way the package docstring says, in a module outside the package, must order
victims by its key, and a second process must load its generated kernel from numba's cache instead
of compiling it again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

RECIPE = '''
import numba as nb

from wildserve.kvcache import EVICTION_POLICIES, KeyedPolicy


@nb.njit(cache=True)
def _key(a, s, now, depth, cat, hint, count):
    return float(depth), 0.0


@EVICTION_POLICIES.register("test-shallow")
class ShallowFirst(KeyedPolicy):
    """Evict the shallowest block first (a test of the recipe, not a sensible policy)."""

    name = "test-shallow"
    key = _key
'''

DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import shallow_policy  # noqa: F401  (registers the policy)
from wildserve.kvcache import make_eviction_policy

p = make_eviction_policy("test-shallow")
p.on_access_many([0, 1, 2], 0.0, 0, 0)  # depths 0, 1, 2
p.on_access_many([3], 0.0, 5, 0)  # depth 5
p.push_many([2, 1, 0, 3], 1.0)  # release order: LRU would evict 2, 1, 0, 3
order = p.pop_many(4, 2.0)
stats = type(p).kernels[0].stats
print(json.dumps({"order": order, "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values())}))
"""


def _run(folder) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(folder)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_policy_from_the_recipe_orders_by_its_key_and_a_second_process_loads_it_from_cache(
    tmp_path,
):
    (tmp_path / "shallow_policy.py").write_text(textwrap.dedent(RECIPE))
    first = _run(tmp_path)
    assert first["order"] == [0, 1, 2, 3]
    assert first["misses"] == 1 and first["hits"] == 0  # compiled here, and saved
    assert any(p.suffix == ".nbc" for p in (tmp_path / "__pycache__").iterdir())
    second = _run(tmp_path)
    assert second["order"] == [0, 1, 2, 3]
    assert second["hits"] == 1 and second["misses"] == 0  # loaded, not recompiled
