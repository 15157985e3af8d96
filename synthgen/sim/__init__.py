"""The simulated OpenAI-compatible server (tests, benchmarks, `--backend sim`): a real loopback HTTP server, not a backend."""

from synthgen.sim.config import FAULT_KINDS, SimConfig
from synthgen.sim.server import SimServer, serve

__all__ = ["FAULT_KINDS", "SimConfig", "SimServer", "serve"]
