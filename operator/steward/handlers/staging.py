"""The staging AdmissionCheck of this worker site: a level-based timer on the local Site.

At a site that MultiKueue dispatches multi-site campaigns to, each copy of a Job is admitted
only once its inputs are on the site's disk (`steward.services.campaign.staging_check`).
Rucio has no watch, so the check is answered on a short timer, on this operator's own Site
(``STEWARD_SITE``) only. Its errors are not the Site's: they go to Events and the log, not to
the Site's conditions, and the check stays Pending until a later pass succeeds.
"""

from __future__ import annotations

from typing import Any

import kopf

from steward.config import Settings
from steward.constants import GROUP, VERSION
from steward.exceptions import PermanentError, TransientError
from steward.handlers.common import factory
from steward.handlers.protections import cluster_facts
from steward.models.site import Site

_SETTINGS = Settings()
SITE = _SETTINGS.site


def _local(name: str, **_: Any) -> bool:  # noqa: ANN401
    return SITE is not None and name == SITE


@kopf.timer(GROUP, VERSION, "sites", interval=_SETTINGS.campaign_interval, when=_local)
def staging_check(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Stage the inputs of the Workloads waiting for the check; release gone copies' rules."""
    site = Site.model_validate({k: v for k, v in body.items() if k != "status"})
    service = factory(memo).create_staging_check_service(cluster_facts(kwargs, memo))
    try:
        service.reconcile(site)
    except TransientError as error:
        raise kopf.TemporaryError(str(error), delay=error.retry_after) from error
    except PermanentError as error:
        kopf.event(body, type="Warning", reason="StagingCheckRefused", message=str(error)[:1024])
