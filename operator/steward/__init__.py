"""Steward: a declarative infrastructure-and-policy engine for the Rubin data facility."""
