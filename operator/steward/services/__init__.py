"""Decisions: desired state against actual state, giving actions and status."""
