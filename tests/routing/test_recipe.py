"""The "add a routing policy" recipe of ``wildserve.routing``, run as its docstring shows it.

The recipe's policy, in a file of its own, is found by name, chooses on hand-built views, and in a
simulated cluster sends each follow-up to the instance holding its prefix (round-robin does not).
"""

from __future__ import annotations

import json

import wildserve.routing
from tests.recipes import recipe_code, run_recipe

DRIVER = """
import json

from wildserve.engine.cluster import ClusterConfig
from wildserve.routing import InstanceView, RouteRequest, make_policy
from wildserve.sim.run import run_policy
from wildserve.workload.request import Request

p = make_policy("most-cached")
req = RouteRequest(request_id=0, prompt_tokens=64, block_hashes=[1, 2, 3, 4], block_size=16)
views = [
    InstanceView(0, num_running=1, match_blocks=lambda hs: 1),
    InstanceView(1, num_running=5, match_blocks=lambda hs: 3),
    InstanceView(2, num_running=2, match_blocks=lambda hs: 3),
]
choices = [p.choose(req, views), p.choose(req, views[:1])]

# two conversations, then each one's next turn (prefix = the previous prompt), once both are done
A, B = (1, 2), (3, 4)
reqs = [
    Request(0, 0.0, 1024, 4, A, 512),
    Request(1, 0.01, 1024, 4, B, 512),
    Request(2, 5.0, 1536, 4, (*B, 5), 512),
    Request(3, 5.01, 1536, 4, (*A, 6), 512),
]
cluster = ClusterConfig(num_instances=2)
runs = {}
for name in ("most-cached", "round-robin"):
    res = run_policy(reqs, cluster, name)
    runs[name] = {"instances": res.instances, "hits": [r.num_hit_tokens for r in res.requests]}
print(json.dumps({"choices": choices, "runs": runs}))
"""


def test_the_recipe_is_one_class_in_a_code_block():
    code = recipe_code(wildserve.routing.__doc__)
    assert '@ROUTING_POLICIES.register("most-cached")' in code and "def choose(" in code


def test_a_policy_from_the_recipe_routes_follow_ups_to_their_prefix(tmp_path):
    out = json.loads(run_recipe(wildserve.routing.__doc__, "most_cached", DRIVER, tmp_path))
    assert out["choices"] == [2, 0]  # longest prefix, then fewer requests; a subset of one view
    cached, rr = out["runs"]["most-cached"], out["runs"]["round-robin"]
    assert cached["instances"] == [0, 1, 1, 0]
    assert cached["hits"][:2] == [0, 0] and min(cached["hits"][2:]) >= 1024 - 16
    assert rr["instances"] == [0, 1, 0, 1] and rr["hits"][2:] == [0, 0]
