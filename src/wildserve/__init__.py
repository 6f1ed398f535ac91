"""wildserve: five LLM-systems research results as software you can run on real traces."""

__version__ = "0.1.0"
