"""Test settings: tiny models run fastest on one thread (and leave the other core free)."""

import os
import sys

import torch

torch.set_num_threads(int(os.environ.get("LORITA_TEST_THREADS", "1")))
sys.path.insert(0, os.path.dirname(__file__))  # tests import their shared helpers (tiny_models)
