"""Routing policy: route health and circuit breakers, ordering strategies, retry timing."""
