"""kopf handlers: ``kopf run -m steward.handlers`` (or ``steward operator``) registers them all.

Handlers are thin: validate the body into the model, build a service with the Factory, call
it, write status and post Events. Decisions live in steward.services.
"""

from steward.handlers import (
    admission,
    campaign,
    oods,
    protections,
    replication,
    retention,
    site,
    staging,
    startup,
)

__all__ = [
    "admission",
    "campaign",
    "oods",
    "protections",
    "replication",
    "retention",
    "site",
    "staging",
    "startup",
]
