"""Serving through KV-memory overload: KunServe (drop replicated layers, run groups as pipelines) and
the baselines it is measured against (vLLM, InferCept-style preemption, Llumnix-style migration)."""
