"""Public pages: landing, docs, the model catalog, and (later) the customer dashboard."""
