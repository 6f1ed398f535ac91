"""Graph vector search with learned early termination (OMEGA) and its baselines.

The index is built by faiss (`IndexHNSWFlat`) and exported to flat arrays; the search is our own numba
HNSW loop so that every method (fixed ef, LAET, DARTH, OMEGA) runs in the same code and only the
stopping rule differs. See `docs/results/omega.md` for the design choices and measurements.
"""
