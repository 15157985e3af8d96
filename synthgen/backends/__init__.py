"""Model backends: one narrow async method, `complete(request) -> Completion`."""
