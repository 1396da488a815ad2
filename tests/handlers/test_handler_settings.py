"""What kopf keeps (pure: kopf's own storage classes, no server)."""

import kopf

from steward.handlers.startup import diffbase_storage, progress_storage


def _body(**status):
    return kopf.Body(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {
                "name": "r",
                "labels": {"team": "a"},
                "annotations": {"steward.lsst.io/git-commit": "abc"},
            },
            "spec": {"destination": "X"},
            "status": status,
        }
    )


def test_the_diffbase_is_the_spec_alone_and_lives_in_the_status():
    storage = diffbase_storage()
    body = _body(kopf={"lastHandledConfiguration": '{"spec":{"destination":"Y"}}'})
    assert storage.build(body=body) == {"spec": {"destination": "X"}}
    assert storage.fetch(body=body) == {"spec": {"destination": "Y"}}
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence={"spec": {"destination": "X"}})
    assert dict(patch) == {
        "status": {"kopf": {"lastHandledConfiguration": '{"spec":{"destination":"X"}}'}}
    }


def test_a_handler_that_succeeds_at_once_leaves_no_progress():
    storage = progress_storage()
    body, patch = _body(), kopf.Patch()
    storage.store(
        key="rule_changed", record={"started": "now", "success": True}, body=body, patch=patch
    )
    assert patch["status"]["kopf"]["progress"]["rule_changed"]["success"] is True
    storage.purge(key="rule_changed", body=body, patch=patch)
    assert dict(patch) == {}  # stored and purged in one patch: nothing to write
