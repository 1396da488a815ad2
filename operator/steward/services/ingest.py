"""``steward ingest``: register files written outside Rucio, completely or not visibly at all.

Use case 12 of 000_923afb1a7a641d92.txt: "an operator wants to manually ingest into the data
backbone files created externally to the camera or Batch Processing Service to be used by
pipelines"; LDM-230 2.4.3.1.2 does the same for the EFD Large File Annex. Once registered, with
metadata, the replication policies place the files like any other data.

The files must already be where the RSE keeps them (its ``lfn2pfn`` path, shown by the plan):
ingest registers, it does not copy bytes. It computes each file's size, Adler-32 (what Rucio
and the transfer tools verify) and MD5 from the local copy.

Two rules make a failure harmless:

- **Plan from Rucio, every time.** The plan compares the local files with what Rucio has
  (replicas, the dataset and its content, its metadata) and lists only what is missing, so
  running the same command again after a failure, a kill or an outage completes the work and
  never registers anything twice. A file Rucio already knows with another size or checksum is
  a conflict: nothing is done until an operator decides.
- **Visible last.** Replicas are registered first (a batch per call, one transaction each, with
  their metadata), then the dataset is created without metadata, the files attached, and the
  dataset's metadata set last. Policies select datasets by metadata, so none of them sees a
  half-filled dataset of this ingest; the operator's periodic selection places it once its
  metadata is set (a subscription may miss it, which the selection covers).

Every write is recorded in the audit trail (kind ``Ingest``, the dataset as the name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from steward.exceptions import PermanentError, StewardError
from steward.observability import EXTERNAL_ACTIONS
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.storage.checksums import Checksums, file_checksums
from steward.storage.rucio import (
    DID_COLUMN_KEYS,
    File,
    FileReplica,
    RucioStorage,
    batched,
    metadata_text,
)

__all__ = [
    "AUDIT_KIND",
    "DEFAULT_BATCH_SIZE",
    "IngestPlan",
    "IngestRequest",
    "IngestResult",
    "IngestService",
    "LocalFile",
    "dataset_did",
]

AUDIT_KIND = "Ingest"
"""``kind`` of the audit rows of an ingest (``steward audit log --kind Ingest``)."""

DEFAULT_BATCH_SIZE = 500
"""Files per Rucio call (registration, attachment): one transaction each."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IngestRequest:
    """What the operator asked for."""

    paths: Sequence[Path]
    scope: str
    rse: str
    meta: Mapping[str, str] = field(default_factory=dict)
    """Metadata of the dataset (what policies select) and of newly registered files."""
    dataset: str | None = None
    """``scope:name`` or a name in ``scope``; derived from the file names when None."""


@dataclass(frozen=True)
class LocalFile:
    """A file to ingest, as read from disk."""

    path: Path
    did: str
    checksums: Checksums


@dataclass(frozen=True)
class IngestPlan:
    """What an ingest would do now; empty lists when it is complete."""

    request: IngestRequest
    dataset: str
    files: tuple[LocalFile, ...]
    register: tuple[LocalFile, ...]
    """Files whose replica on the RSE is not in Rucio yet."""
    create_dataset: bool
    attach: tuple[str, ...]
    """File DIDs not attached to the dataset yet."""
    metadata: Mapping[str, str]
    """Dataset metadata to set (keys missing or different)."""
    conflicts: tuple[str, ...]
    """Why nothing may be done until an operator decides; empty when the plan may run."""
    pfns: Mapping[str, str]
    """Where the RSE keeps each file: the bytes must be there."""

    @property
    def pending(self) -> bool:
        """Whether applying would change anything."""
        return bool(self.register or self.create_dataset or self.attach or self.metadata)

    def lines(self) -> list[str]:
        """The plan for people, one line per action, conflicts first."""
        lines = [f"!! {conflict}" for conflict in self.conflicts]
        lines += [
            f"+ register {f.did} on {self.request.rse} ({f.checksums.bytes} bytes, adler32 "
            f"{f.checksums.adler32}, md5 {f.checksums.md5}) from {f.path}"
            + (f"\n    expected at {self.pfns[f.did]}" if f.did in self.pfns else "")
            for f in self.register
        ]
        if self.create_dataset:
            lines.append(f"+ create dataset {self.dataset}")
        if self.attach:
            lines.append(f"+ attach {len(self.attach)} files to {self.dataset}")
        lines += [f"+ set {self.dataset} {k}={v}" for k, v in sorted(self.metadata.items())]
        done = len(self.files) - len(self.register)
        lines.append(
            f"Ingest: {len(self.register)} to register, {done} already registered, "
            f"{len(self.attach)} to attach, {len(self.metadata)} metadata keys to set"
            + (f"; {len(self.conflicts)} conflicts" if self.conflicts else "")
            + "."
        )
        return lines

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (``--format json``)."""
        return {
            "dataset": self.dataset,
            "rse": self.request.rse,
            "pending": self.pending,
            "register": [
                {
                    "did": f.did,
                    "path": str(f.path),
                    "bytes": f.checksums.bytes,
                    "adler32": f.checksums.adler32,
                    "md5": f.checksums.md5,
                    "pfn": self.pfns.get(f.did),
                }
                for f in self.register
            ],
            "alreadyRegistered": len(self.files) - len(self.register),
            "createDataset": self.create_dataset,
            "attach": list(self.attach),
            "metadata": dict(self.metadata),
            "conflicts": list(self.conflicts),
        }


@dataclass(frozen=True)
class IngestResult:
    """What one apply did."""

    registered: int
    created_dataset: bool
    attached: int
    metadata: Mapping[str, str]


def dataset_did(request: IngestRequest, dids: Sequence[str]) -> str:
    """The dataset's DID: as given (``name`` means ``scope:name``), or derived from the files.

    A derived name is a hash of the sorted file DIDs, so running the same command again names
    the same dataset and completes it.
    """
    if request.dataset:
        return request.dataset if ":" in request.dataset else f"{request.scope}:{request.dataset}"
    digest = hashlib.sha256("\n".join(sorted(dids)).encode()).hexdigest()[:12]
    return f"{request.scope}:ingest-{digest}"


def read_files(scope: str, paths: Sequence[Path]) -> list[LocalFile]:
    """Read and checksum the local files; each becomes ``scope:<file name>``.

    Raises
    ------
    PermanentError
        A path is not a readable regular file, or two paths share a file name.
    """
    seen: dict[str, Path] = {}
    files = []
    for path in paths:
        if not path.is_file():
            msg = f"{path}: not a regular file"
            raise PermanentError(msg)
        did = f"{scope}:{path.name}"
        if did in seen:
            msg = f"{path} and {seen[did]} would both be {did}: file names must be unique"
            raise PermanentError(msg)
        seen[did] = path
        try:
            checksums = file_checksums(path)
        except OSError as error:
            msg = f"{path}: cannot read: {error.strerror}"
            raise PermanentError(msg) from error
        files.append(LocalFile(path, did, checksums))
    return files


def _conflict(local: LocalFile, known: FileReplica | None, rse: str) -> str | None:
    """Why ``local`` cannot be registered as ``known`` says it is, if it cannot."""
    if known is None:
        return None
    ours = local.checksums
    differs = [
        f"{what} {theirs} in Rucio, {mine} in {local.path}"
        for what, theirs, mine in (
            ("size", known.bytes, ours.bytes),
            ("adler32", known.adler32, ours.adler32),
            ("md5", known.md5, ours.md5),
        )
        if theirs is not None and str(theirs).lower() != str(mine).lower()
    ]
    if differs:
        return f"{local.did} is already in Rucio with other content: {'; '.join(differs)}"
    state = known.states.get(rse)
    if state is not None and state != "AVAILABLE":
        return (
            f"{local.did} has a replica on {rse} in state {state}; "
            "resolve it (or declare it bad) before ingesting again"
        )
    return None


class IngestService:
    """Plans and applies ingests; owns the audit records of each write.

    Parameters
    ----------
    rucio
        The Rucio storage.
    audit
        Where every write is recorded.
    actor
        Who ingests (the operator's user name).
    batch_size
        Files per registration and attachment call.
    """

    def __init__(
        self,
        rucio: RucioStorage,
        audit: AuditService,
        *,
        actor: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.rucio = rucio
        self.audit = audit
        self.actor = actor
        self.batch_size = batch_size

    def plan(self, request: IngestRequest) -> IngestPlan:
        """Compare the local files with Rucio and list what is missing.

        Raises
        ------
        PermanentError
            A path is unreadable, names collide, or the RSE does not exist in Rucio.
        """
        files = read_files(request.scope, request.paths)
        dataset = dataset_did(request, [f.did for f in files])
        rse = self.rucio.get_rse_info(request.rse)
        known = {r.did: r for r in self.rucio.list_file_replicas([f.did for f in files])}
        unreplicated = [f.did for f in files if f.did not in known]
        catalogue = self.rucio.get_metadata_bulk(unreplicated) if unreplicated else {}
        for did, meta in catalogue.items():
            known[did] = FileReplica(did, meta.get("bytes"), meta.get("adler32"), meta.get("md5"))
        conflicts = [c for f in files if (c := _conflict(f, known.get(f.did), rse.name))]
        register = tuple(f for f in files if rse.name not in known.get(f.did, _NONE).states)
        if not rse.deterministic:
            conflicts.append(
                f"{rse.name} is not deterministic: Rucio cannot tell where the files are; "
                "ingest only registers files on deterministic RSEs"
            )
        collection = self.rucio.get_collection(dataset)
        attached = set(self.rucio.list_content(dataset)) if collection is not None else set()
        attach = tuple(f.did for f in files if f.did not in attached)
        if collection is not None and collection.type != "DATASET":
            conflicts.append(f"{dataset} is a {collection.type.lower()}, not a dataset")
        elif collection is not None and attach and not collection.open:
            conflicts.append(f"{dataset} is closed: {len(attach)} files cannot be attached")
        metadata = self._missing_metadata(dataset, request.meta, exists=collection is not None)
        return IngestPlan(
            request=request,
            dataset=dataset,
            files=tuple(files),
            register=register,
            create_dataset=collection is None,
            attach=attach,
            metadata=metadata,
            conflicts=tuple(conflicts),
            pfns=self.rucio.expected_pfns(rse.name, [f.did for f in register])
            if register and rse.deterministic
            else {},
        )

    def _missing_metadata(
        self, dataset: str, wanted: Mapping[str, str], *, exists: bool
    ) -> dict[str, str]:
        if not exists or not wanted:
            return dict(wanted)
        current: dict[str, Any] = {}
        if any(key in DID_COLUMN_KEYS for key in wanted):
            current.update(self.rucio.get_metadata(dataset, plugin="DID_COLUMN"))
        if any(key not in DID_COLUMN_KEYS for key in wanted):
            current.update(self.rucio.get_metadata(dataset, plugin="JSON"))
        return {
            key: value
            for key, value in wanted.items()
            if current.get(key) is None or metadata_text(current[key]) != value
        }

    def apply(self, plan: IngestPlan, *, progress: Progress | None = None) -> IngestResult:
        """Carry out a plan: replicas, dataset, attachments, metadata last.

        Stops at the first failure, which is recorded and raised; what was done stays done
        and a new plan lists the rest.

        Raises
        ------
        PermanentError
            The plan has conflicts (nothing is done).
        StewardError
            Rucio refused or failed a step (an RSE blocked for writing, an outage).
        """
        if plan.conflicts:
            msg = f"{len(plan.conflicts)} conflicts; nothing was ingested: " + "; ".join(
                plan.conflicts
            )
            raise PermanentError(msg)
        report = progress or (lambda _: None)
        ref = ResourceRef(kind=AUDIT_KIND, name=plan.dataset)
        rse = plan.request.rse
        registered = 0
        for batch in batched(plan.register, self.batch_size):
            files = [
                File(
                    f.did,
                    bytes=f.checksums.bytes,
                    adler32=f.checksums.adler32,
                    md5=f.checksums.md5,
                    meta=dict(plan.request.meta),
                )
                for f in batch
            ]
            self._step(
                ref,
                "rucio.replica.add",
                rse,
                {"files": [{"did": f.did, "bytes": f.bytes, "adler32": f.adler32} for f in files]},
                partial(self.rucio.add_replicas, rse, files, ignore_availability=False),
            )
            registered += len(files)
            report(f"registered {registered}/{len(plan.register)} files on {rse}")
        if plan.create_dataset:
            self._step(
                ref,
                "rucio.dataset.add",
                plan.dataset,
                {"dataset": plan.dataset},
                partial(self.rucio.add_dataset, plan.dataset),
            )
            report(f"created dataset {plan.dataset}")
        attached = 0
        for dids in batched(plan.attach, self.batch_size):
            self._step(
                ref,
                "rucio.did.attach",
                plan.dataset,
                {"files": dids},
                partial(self.rucio.attach, plan.dataset, dids),
            )
            attached += len(dids)
            report(f"attached {attached}/{len(plan.attach)} files to {plan.dataset}")
        if plan.metadata:
            self._step(
                ref,
                "rucio.did.set_metadata",
                plan.dataset,
                {"metadata": dict(plan.metadata)},
                partial(self.rucio.set_metadata, plan.dataset, plan.metadata),
            )
            report(f"set metadata of {plan.dataset}")
        return IngestResult(registered, plan.create_dataset, attached, dict(plan.metadata))

    def _step(
        self,
        ref: ResourceRef,
        action: str,
        target: str,
        after: dict[str, Any],
        write: Callable[[], object],
    ) -> None:
        """Do one write and record it, success or failure."""
        try:
            write()
        except StewardError as error:
            self.audit.record(
                AuditRecord(
                    ref, action, self.actor, "failure", target, after=after, message=str(error)
                )
            )
            raise
        EXTERNAL_ACTIONS.labels(AUDIT_KIND, action).inc()
        self.audit.record(AuditRecord(ref, action, self.actor, "success", target, after=after))


_NONE = FileReplica("", None, None, None)
"""Stands for a file Rucio does not know: no replicas anywhere."""
