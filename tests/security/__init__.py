"""Security: attacks on a shared Sluice, each refused or contained (issue 13)."""
