"""Multi-step recipe logic that is more than a template: each module registers its stages."""

from synthgen.recipes import evol_instruct, rephrase, retrieval, self_instruct

__all__ = ["evol_instruct", "rephrase", "retrieval", "self_instruct"]
