"""Attacks by a hostile tenant, each against a real stack (API process, Redis, worker where needed)."""
