"""Multi-step recipe logic that is more than a template: each module registers its stages."""
