"""Console and CLI write services: the rules behind every admin write, with audit."""
