"""The Campaign reconciler (`CampaignService`), split by concern into the modules beside it.

``plan`` holds the pure decisions, ``record`` the ledger of attempts, ``jobs`` the DAG and its
Jobs, ``data`` Rucio (staging, outputs), ``status`` what ``kubectl get`` shows; ``service``
ties them into one pass.
"""

from steward.services.campaign.base import MOUNT_PATH
from steward.services.campaign.data import RELEASE_LIFETIME
from steward.services.campaign.service import CampaignService

__all__ = ["MOUNT_PATH", "RELEASE_LIFETIME", "CampaignService"]
