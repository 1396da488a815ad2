"""How ``make test`` hands tests to its pytest-xdist workers: module groups, one worker each.

A few modules share a module fixture that starts clusters of their own (a manager and two
worker sites with Kueue: about 225 s of setup on 2 cores; a rendered site deployment on a
second control plane). Handed out test by test, every worker that draws one of their tests
sets the fixture up again: CI set the multi-site campaign module up three times at once, all
at the start (its tests are ``long``, so they go first, one per worker), each setup slowed to
230-460 s by the others beside the rest of the suite.

``xdist_group`` marks would say this, but pytest-xdist 3.8.0's ``loadgroup`` writes the group
into ``Item._nodeid``, which pytest 9.2 no longer reads, so no group reaches the scheduler
(pytest-xdist#1386; the fix, #1388, is not released). The controller never collects, so it
cannot read marks itself: the modules are named here, and under ``--dist loadgroup`` each one
is a single unit of work, handed to one worker. Every other test is its own unit, as before.
"""

from __future__ import annotations

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadGroupScheduling

#: Modules whose tests share a module fixture that starts servers of its own.
ONE_WORKER_MODULES = frozenset(
    {
        "tests/e2e/test_deployment_e2e.py",
        "tests/e2e/test_multikueue.py",
        "tests/e2e/test_multikueue_campaign.py",
    }
)


def scope_of(nodeid: str, fallback: str) -> str:
    """The unit of work a test belongs to: its module's when the module is named above."""
    module = nodeid.split("::", 1)[0]
    return module if module in ONE_WORKER_MODULES else fallback


class ModuleGroupScheduling(LoadGroupScheduling):
    """``loadgroup`` with the modules of :data:`ONE_WORKER_MODULES` as groups.

    Groups go out first (pytest-xdist orders units by size, largest first), one per worker,
    so each worker starts one fixture setup instead of all of them starting several at once.
    """

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid, super()._split_scope(nodeid))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadGroupScheduling | None:
    """Schedule ``--dist loadgroup`` with module groups; leave every other mode to xdist."""
    if config.getvalue("dist") != "loadgroup":
        return None
    return ModuleGroupScheduling(config, log)
