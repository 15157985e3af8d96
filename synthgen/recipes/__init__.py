"""Multi-step recipe logic that is more than a template; its stages are registered through entry points."""
