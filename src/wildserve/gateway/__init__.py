"""The LMetric gateway (an OpenAI-compatible router), an emulated vLLM engine and a trace replayer.

Heavy dependencies (aiohttp, uvloop, pyzmq, tokenizers) come with the ``gateway`` extra and are
imported by the modules that need them, never by this package's ``__init__``.
"""
