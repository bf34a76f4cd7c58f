"""Pretrained causal language models (the ``lorita[lm]`` extra): load, text, perplexity, cut, recover, deploy.

Nothing here imports transformers at import time; the functions that need it say so.
"""
