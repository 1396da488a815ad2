"""Valid sample documents of every kind, and a helper to break them one field at a time."""

import json

from steward.constants import GROUP, VERSION
from steward.services.audit import ResourceRef

META = {"apiVersion": "steward.lsst.io/v1alpha1", "metadata": {"name": "x", "namespace": "s"}}

SITE = {
    "apiVersion": "steward.lsst.io/v1alpha1",
    "kind": "Site",
    "metadata": {"name": "ncsa"},
    "spec": {
        "facility": "NCSA",
        "roles": ["archive", "batch"],
        "rses": [
            {
                "name": "NCSA_TAPE",
                "type": "TAPE",
                "attributes": {"custodial": True, "tier": 1},
                "quota": "500TiB",
                "protocols": [
                    {"scheme": "mock", "hostname": "localhost", "port": 0, "prefix": "/t"}
                ],
            }
        ],
        "downtimes": [
            {"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T12:00:00Z", "reason": "HPSS"}
        ],
    },
}

RULE = {
    **META,
    "kind": "ReplicationRule",
    "spec": {
        "selector": {"scope": "raw", "match": {"datatype": "raw"}},
        "destination": "site=IN2P3&type=TAPE",
        "copies": 1,
        "lifetime": "30d",
        "transferWindow": {"start": "22:00", "end": "06:00", "timezone": "America/Santiago"},
    },
}

RETENTION = {
    **META,
    "kind": "RetentionPolicy",
    "spec": {
        "selector": {"scope": "scratch", "match": {"datatype": "scratch"}},
        "lifetime": "21d",
        "dataClass": "Scratch",
        "owner": "jdoe",
    },
}

OODS = {
    **META,
    "kind": "OODSCache",
    "spec": {
        "rse": "BASE_OODS",
        "instruments": ["LSSTCam"],
        "window": "7d",
        "capacity": "200TiB",
        "pins": [{"selector": {"dids": ["calib:master-bias"]}, "reason": "current masters"}],
    },
}

CAMPAIGN = {
    **META,
    "kind": "Campaign",
    "spec": {
        "site": "ncsa",
        "image": "lsstsqre/centos:w_2026_47",
        "steps": [
            {"name": "isr", "pipeline": "DRP.yaml#isr"},
            {"name": "calibrate", "pipeline": "DRP.yaml#calibrate", "dependsOn": ["isr"]},
            {"name": "coadd", "pipeline": "DRP.yaml#coadd", "dependsOn": ["calibrate", "isr"]},
        ],
        "coverage": {"dataIds": [{"visit": 1, "detector": 2}]},
        "outputs": {"scope": "drp", "archive": "site=NCSA&type=TAPE"},
    },
}


def patched(document, path, value):
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


DELETE = object()


def replication_ref(resource, generation=1):
    """The audit reference of a ReplicationRule resource (a model), at ``generation``."""
    return ResourceRef(
        kind="ReplicationRule",
        namespace=resource.metadata.namespace,
        name=resource.metadata.name,
        uid=resource.metadata.uid,
        generation=generation,
    )


def minimal_rule(name, namespace):
    """The smallest ReplicationRule the API server accepts, as a body to create."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReplicationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"dids": ["scope:name"]}, "destination": "NCSA_DISK"},
    }
