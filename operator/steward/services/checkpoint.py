"""Signed checkpoints: the audit trail stays tamper-evident to whoever can write its database.

The hash chain (`steward.services.audit`) catches an edited row, but not someone who deletes
the last rows and rewinds the head, nor someone who edits a row and recomputes every later
hash: the chain's head lives in the same database. Checkpoints close that gap the way AWS
CloudTrail's signed digest files and Certificate Transparency's signed tree heads do:

- every N rows and every M minutes, and at clean shutdown, the operator signs (Ed25519) the
  statement "the trail had ``seq`` rows, the last with hash ``head``, at ``time``", which also
  names the previous checkpoint's hash, so checkpoints form a chain of their own;
- the private key comes from a file or a Kubernetes Secret, never from the database;
- each checkpoint is stored in the database (whose primary key gives each number to one
  process) and then written to a ConfigMap in the operator's namespace (a witness the database
  administrator does not control), and auditors export copies (``steward audit checkpoint
  --export``); a checkpoint the witness lacks is written again with the next one;
- ``steward audit verify`` checks every signature, that checkpoints chain, and that the trail
  still passes through every checkpoint: a rewound tail or a rewritten chain no longer does.

Before signing, the operator checks that the trail still passes through its previous
checkpoint; if it does not, it refuses to sign (a new signature must never bless tampering).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from steward.config import Settings
from steward.exceptions import ConfigurationError, StewardError
from steward.observability import AUDIT_CHECKPOINTS, get_logger
from steward.schema.audit import GENESIS_HASH, AuditCheckpoint
from steward.services.audit import AuditService, TamperFinding, utc
from steward.storage.kubernetes import ConfigMaps

__all__ = [
    "CHECKPOINTS_CONFIGMAP",
    "KEY_CONFIGMAP",
    "SECRET_KEY",
    "WITNESS_WINDOW",
    "AuditTamperedError",
    "Checkpoint",
    "CheckpointLoop",
    "CheckpointService",
    "ConfigMapWitness",
    "PublicKey",
    "SigningKey",
    "Verification",
    "due",
    "load_signing_key",
    "verify_trail",
]

_LOG = get_logger(__name__)

CHECKPOINTS_CONFIGMAP: Final = "steward-audit-checkpoints"
"""ConfigMap (operator's namespace) holding the newest checkpoints, one key each."""

KEY_CONFIGMAP: Final = "steward-audit-key"
"""ConfigMap (operator's namespace) publishing the public key that verifies checkpoints."""

SECRET_KEY: Final = "private-key.pem"  # noqa: S105 - a key name, not a secret
"""Key of the signing key in its Kubernetes Secret (``STEWARD_AUDIT_SIGNING_KEY_SECRET``)."""

WITNESS_WINDOW: Final = 500
"""Checkpoints kept in the ConfigMap: about 175 KB, well under its 1 MiB limit, and 41 hours
at one checkpoint every 5 minutes. Older ones live on in the database and in exports; the
newest alone already vouches for every row before it (each row's hash covers the previous)."""

_LABELS: Final = {"app.kubernetes.io/name": "steward", "app.kubernetes.io/component": "audit"}


class AuditTamperedError(StewardError):
    """The trail no longer passes through its last signed checkpoint: nothing was signed."""


# -- checkpoints and keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement about the trail; ``signature`` covers every other field."""

    number: int
    """1 for the first checkpoint, then one more each time."""
    seq: int
    """Rows in the trail (the id of the last one)."""
    head: str
    """Hash of row ``seq`` (the genesis hash for an empty trail)."""
    time: datetime
    prev: str
    """`digest` of checkpoint ``number - 1`` (the genesis hash for the first)."""
    key_id: str
    """Which key signed it (`PublicKey.key_id`)."""
    signature: str = ""
    """Ed25519 signature of `payload`, base64."""

    def payload(self) -> bytes:
        """The signed bytes: canonical JSON of every field but the signature."""
        content = {
            "number": self.number,
            "seq": self.seq,
            "head": self.head,
            "time": utc(self.time).isoformat(timespec="microseconds"),
            "prev": self.prev,
            "key": self.key_id,
        }
        return json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def digest(self) -> str:
        """Hash of the payload: what the next checkpoint names as ``prev``."""
        return hashlib.sha256(self.payload()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as stored in a ConfigMap or an export."""
        return {**json.loads(self.payload()), "signature": self.signature}

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:  # noqa: ANN401 - parsed JSON
        """Read a checkpoint written by `to_json`.

        Raises
        ------
        ValueError
            If a field is missing or of the wrong type.
        """
        try:
            checkpoint = cls(
                number=int(data["number"]),
                seq=int(data["seq"]),
                head=str(data["head"]),
                time=datetime.fromisoformat(str(data["time"])),
                prev=str(data["prev"]),
                key_id=str(data["key"]),
                signature=str(data["signature"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            msg = f"not a checkpoint ({type(error).__name__}: {error})"
            raise ValueError(msg) from None
        return checkpoint

    @classmethod
    def from_row(cls, row: AuditCheckpoint) -> Checkpoint:
        """The checkpoint a database row holds."""
        return cls(
            row.number, row.seq, row.head, utc(row.time), row.prev, row.key_id, row.signature
        )

    def to_row(self) -> AuditCheckpoint:
        """A database row holding this checkpoint."""
        return AuditCheckpoint(
            number=self.number,
            seq=self.seq,
            head=self.head,
            time=self.time,
            prev=self.prev,
            key_id=self.key_id,
            signature=self.signature,
        )


@dataclass(frozen=True)
class PublicKey:
    """The key that verifies checkpoints; published, and pinned by auditors."""

    key: Ed25519PublicKey

    @classmethod
    def from_pem(cls, data: str | bytes, *, source: str = "public key") -> PublicKey:
        """Read a PEM (SubjectPublicKeyInfo) public key.

        Raises
        ------
        ConfigurationError
            If it is not an Ed25519 public key, naming ``source``.
        """
        raw = data.encode("utf-8") if isinstance(data, str) else data
        try:
            key = serialization.load_pem_public_key(raw)
        except ValueError as error:
            msg = f"{source} is not a PEM public key: {error}"
            raise ConfigurationError(msg) from None
        if not isinstance(key, Ed25519PublicKey):
            msg = f"{source} is a {type(key).__name__}, not an Ed25519 public key"
            raise ConfigurationError(msg)
        return cls(key)

    def pem(self) -> str:
        """PEM text of the key."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def key_id(self) -> str:
        """First 16 hex digits of the SHA-256 of the raw key: short, and names the key."""
        raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:16]

    def problem(self, checkpoint: Checkpoint) -> str | None:
        """Why ``checkpoint`` is not signed by this key, or None when it is."""
        if checkpoint.key_id != self.key_id:
            return (
                f"signed by another key ({checkpoint.key_id}), not the trusted key "
                f"{self.key_id}: forged, or the signing key was replaced"
            )
        try:
            self.key.verify(base64.b64decode(checkpoint.signature), checkpoint.payload())
        except (InvalidSignature, ValueError):
            return "its signature does not verify: the checkpoint was forged or altered"
        return None


@dataclass(frozen=True)
class SigningKey:
    """The operator's private key; never stored in the database."""

    key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, *, source: str) -> SigningKey:
        """Read an unencrypted PKCS#8 PEM private key.

        Raises
        ------
        ConfigurationError
            If it is not an Ed25519 private key, naming ``source`` (never the key's bytes).
        """
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            msg = f"{source} is not an unencrypted PEM private key"
            raise ConfigurationError(msg) from None
        if not isinstance(key, Ed25519PrivateKey):
            msg = f"{source} is a {type(key).__name__}, not an Ed25519 key"
            raise ConfigurationError(msg)
        return cls(key)

    def pem(self) -> bytes:
        """PKCS#8 PEM bytes (write them with `steward.storage.files.write_private`)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public(self) -> PublicKey:
        """The matching public key."""
        return PublicKey(self.key.public_key())

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        """``checkpoint`` with this key's id and signature."""
        unsigned = replace(checkpoint, key_id=self.public().key_id, signature="")
        signature = base64.b64encode(self.key.sign(unsigned.payload())).decode("ascii")
        return replace(unsigned, signature=signature)


def _secret_location(value: str, namespace: str) -> tuple[str, str]:
    space, _, name = value.rpartition("/")
    return space or namespace, name


def load_signing_key(
    settings: Settings, namespace: str, secrets: Callable[[str], ConfigMaps] | None = None
) -> SigningKey | None:
    """The signing key from ``audit_signing_key_file`` or ``audit_signing_key_secret``.

    ``secrets`` gives access to a namespace's Secrets (the Kubernetes API); it is needed only
    for the Secret, which is looked up in ``namespace`` unless the setting names another.
    None when neither setting is given: checkpoints are then off.

    Raises
    ------
    ConfigurationError
        The file or Secret cannot be read or does not hold an Ed25519 key.
    """
    if settings.audit_signing_key_file is not None:
        path = settings.audit_signing_key_file
        try:
            data = path.read_bytes()
        except OSError as error:
            msg = f"cannot read the audit signing key {path}: {error.strerror}"
            raise ConfigurationError(msg) from None
        return SigningKey.from_pem(data, source=str(path))
    if settings.audit_signing_key_secret is not None:
        if secrets is None:
            msg = "the audit signing key is in a Secret, but there is no Kubernetes API here"
            raise ConfigurationError(msg)
        space, name = _secret_location(settings.audit_signing_key_secret, namespace)
        data = secrets(space).read_secret(name, SECRET_KEY)
        return SigningKey.from_pem(data, source=f"Secret {space}/{name} key {SECRET_KEY}")
    return None


# -- the witness outside the database ------------------------------------------------------------


class Witness(Protocol):
    """Somewhere outside the database that keeps checkpoints."""

    def write(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint``."""
        ...

    def read(self) -> tuple[list[Checkpoint], list[str]]:
        """Every checkpoint kept, and what could not be read."""
        ...


@dataclass
class ConfigMapWitness:
    """Checkpoints and the public key in ConfigMaps of the operator's namespace."""

    config_maps: ConfigMaps
    window: int = WITNESS_WINDOW

    @staticmethod
    def entry(number: int) -> str:
        """ConfigMap key of checkpoint ``number``."""
        return f"checkpoint-{number:010d}.json"

    def write(self, checkpoint: Checkpoint) -> None:
        """Add ``checkpoint`` and drop the one that leaves the window; nothing else changes."""
        data: dict[str, str | None] = {
            self.entry(checkpoint.number): json.dumps(checkpoint.to_json(), sort_keys=True)
        }
        if checkpoint.number > self.window:
            data[self.entry(checkpoint.number - self.window)] = None
        self.config_maps.merge(CHECKPOINTS_CONFIGMAP, data, _LABELS)

    def read(self) -> tuple[list[Checkpoint], list[str]]:
        """Every checkpoint in the ConfigMap (none if it does not exist yet)."""
        data = self.config_maps.read(CHECKPOINTS_CONFIGMAP) or {}
        found, problems = [], []
        for key, text in sorted(data.items()):
            try:
                found.append(Checkpoint.from_json(json.loads(text)))
            except ValueError as error:
                problems.append(f"ConfigMap {CHECKPOINTS_CONFIGMAP} key {key}: {error}")
        return found, problems

    def publish_key(self, key: PublicKey) -> None:
        """Publish the public key that verifies the checkpoints, keeping earlier ones.

        ``public-key.pem`` is the current key; ``public-key-<id>.pem`` every key ever
        published, so checkpoints signed before a change of key can still be checked.
        """
        data = {
            "public-key.pem": key.pem(),
            "key-id": key.key_id,
            f"public-key-{key.key_id}.pem": key.pem(),
        }
        self.config_maps.merge(KEY_CONFIGMAP, data, _LABELS)

    def public_key(self) -> PublicKey | None:
        """The current published public key, if any."""
        data = self.config_maps.read(KEY_CONFIGMAP) or {}
        pem = data.get("public-key.pem")
        if pem is None:
            return None
        where = f"ConfigMap {self.config_maps.namespace}/{KEY_CONFIGMAP}"
        return PublicKey.from_pem(pem, source=where)

    def public_keys(self) -> list[PublicKey]:
        """Every key ever published, the current one first."""
        data = self.config_maps.read(KEY_CONFIGMAP) or {}
        where = f"ConfigMap {self.config_maps.namespace}/{KEY_CONFIGMAP}"
        pems = [data["public-key.pem"]] if "public-key.pem" in data else []
        pems += [v for k, v in sorted(data.items()) if k.startswith("public-key-")]
        keys: dict[str, PublicKey] = {}
        for pem in pems:
            key = PublicKey.from_pem(pem, source=where)
            keys.setdefault(key.key_id, key)
        return list(keys.values())


# -- writing checkpoints -------------------------------------------------------------------------


@dataclass
class CheckpointService:
    """Signs checkpoints of the trail and keeps them in the witness and the database."""

    audit: AuditService
    key: SigningKey
    witness: Witness | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _signed: Checkpoint | None = field(default=None, init=False, repr=False)
    """The last checkpoint this process signed."""

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint signed by this key, from the witness or the database."""
        return self._known()[0]

    def _unwitnessed(self) -> list[Checkpoint]:
        """Ours in the database, newer than any the witness has (its write had failed)."""
        if self.witness is None:
            return []
        witnessed = self.witness.read()[0]
        newest = max((c.number for c in witnessed), default=0)
        public = self.key.public()
        stored = map(Checkpoint.from_row, self.audit.checkpoints())
        return [c for c in stored if c.number > newest and public.problem(c) is None]

    def _known(self) -> tuple[Checkpoint | None, int]:
        """Our key's newest checkpoint, and the highest number any key has used.

        The witness comes first: the database may have lost rows, the witness is why
        checkpoints exist. One of ours the witness has and the database lacks is copied over.
        Numbers go on across a change of key, so the new key's checkpoints never take the
        names (ConfigMap keys, database rows) of the old key's.
        """
        public = self.key.public()
        stored = {c.number: c for c in map(Checkpoint.from_row, self.audit.checkpoints())}
        witnessed = self.witness.read()[0] if self.witness is not None else []
        for checkpoint in witnessed:
            if checkpoint.number not in stored and public.problem(checkpoint) is None:
                self.audit.add_checkpoint(checkpoint.to_row())
                stored[checkpoint.number] = checkpoint
        valid = [c for c in stored.values() if public.problem(c) is None]
        if self._signed is not None:
            # What this process signed itself: believed even if both copies were altered.
            valid.append(self._signed)
        highest = max((c.number for c in [*stored.values(), *witnessed, *valid]), default=0)
        return max(valid, key=lambda c: c.number, default=None), highest

    def checkpoint(self, written: int = 0) -> Checkpoint:
        """Sign the trail as it is now, after checking it still passes the last checkpoint.

        After a change of key the new key starts a chain of its own (``prev`` is the genesis
        hash) but still checks the trail against its own last checkpoint, if it has one.
        ``written`` is the last row this process appended: a trail ending before it lost rows
        since the last checkpoint, which the checkpoint alone could not show.

        Raises
        ------
        AuditTamperedError
            The trail no longer matches the previous checkpoint; nothing is signed.
        StewardError
            The witness or the database could not be written; nothing is stored.
        """
        previous, highest = self._known()
        seq, head = (previous.seq, previous.head) if previous else (0, GENESIS_HASH)
        last_id, last_hash, findings = self.audit.extend_from(seq, head)
        if last_id < written and not findings:
            findings.append(
                TamperFinding(
                    last_id + 1,
                    f"the trail ends at row {last_id}, but this operator wrote rows up to "
                    f"{written}: rows {last_id + 1}-{written} were deleted",
                )
            )
        if findings:
            listed = "; ".join(str(f) for f in findings[:5])
            msg = f"the audit trail no longer matches checkpoint {previous and previous.number}: "
            raise AuditTamperedError(msg + listed)
        chained = previous is not None and previous.number == highest
        checkpoint = self.key.sign(
            Checkpoint(
                number=highest + 1,
                seq=last_id,
                head=last_hash,
                time=utc(self.clock()),
                prev=previous.digest() if chained and previous else GENESIS_HASH,
                key_id="",
            )
        )
        # The database first: its primary key lets only one process take a number, so two
        # processes signing at once never write two different checkpoints under one name.
        missing = self._unwitnessed()
        self.audit.add_checkpoint(checkpoint.to_row())
        self._signed = checkpoint
        if self.witness is not None:
            for earlier in missing:
                self.witness.write(earlier)
            self.witness.write(checkpoint)
        _LOG.info(
            "audit checkpoint signed", number=checkpoint.number, seq=last_id, head=last_hash[:12]
        )
        return checkpoint


def due(
    last_seq: int,
    last_time: float | None,
    head_seq: int,
    now: float,
    *,
    every_entries: int,
    every_seconds: float,
) -> bool:
    """Whether a checkpoint is due: ``every_entries`` new rows, or ``every_seconds`` passed."""
    if last_time is None:
        return True
    return head_seq - last_seq >= every_entries or now - last_time >= every_seconds


class CheckpointLoop:
    """Runs `CheckpointService.checkpoint` when `due`, in a thread of its own, and at stop.

    `notify` (an `AuditService` listener) wakes it when enough rows were appended; otherwise
    it wakes when the interval has passed. A failed checkpoint is logged and tried again at
    the next wake: an error postpones, it never skips the check.
    """

    def __init__(
        self,
        service: CheckpointService,
        *,
        every_entries: int,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._every_entries = every_entries
        self._every_seconds = every_seconds
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._last_seq = 0
        self._last_time: float | None = None
        self._failed_at: float | None = None
        self._head = 0
        self._thread: threading.Thread | None = None
        self.failures = 0
        """Checkpoints that failed so far (a metric)."""

    @property
    def public_key(self) -> PublicKey:
        """The key that verifies what this loop signs."""
        return self._service.key.public()

    def age(self) -> float:
        """Seconds since the last checkpoint was signed (NaN before the first)."""
        if self._last_time is None:
            return float("nan")
        return self._clock() - self._last_time

    def notify(self, seq: int) -> None:
        """A listener of `AuditService`: rows up to ``seq`` were appended."""
        self._head = max(self._head, seq)
        if self._head - self._last_seq >= self._every_entries:
            self._wake.set()

    def run_once(self) -> Checkpoint | None:
        """Write a checkpoint if one is due; return it (None: not due, or it failed)."""
        with self._lock:
            now = self._clock()
            if self._failed_at is not None and now - self._failed_at < self._every_seconds:
                return None
            if not due(
                self._last_seq,
                self._last_time,
                self._head,
                now,
                every_entries=self._every_entries,
                every_seconds=self._every_seconds,
            ):
                return None
            return self._write(now)

    def _write(self, now: float) -> Checkpoint | None:
        try:
            checkpoint = self._service.checkpoint(written=self._head)
        except StewardError as error:
            self.failures += 1
            AUDIT_CHECKPOINTS.labels("failure").inc()
            _LOG.error("audit checkpoint failed", error=str(error))
            self._failed_at = now  # try again after an interval, not at every new row
            return None
        self._failed_at = None
        AUDIT_CHECKPOINTS.labels("success").inc()
        self._last_seq, self._last_time = checkpoint.seq, now
        self._head = max(self._head, checkpoint.seq)
        return checkpoint

    def start(self) -> None:
        """Write the first checkpoint now, then keep writing them in a daemon thread."""
        self.run_once()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                waited = self._clock() - (self._last_time or self._clock())
            self._wake.wait(max(0.0, self._every_seconds - waited))
            self._wake.clear()
            if not self._stopping.is_set():
                self.run_once()

    def stop(self) -> Checkpoint | None:
        """Stop the thread and sign a last checkpoint (clean shutdown)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            return self._write(self._clock())


# -- verifying -------------------------------------------------------------------------------------


@dataclass
class Verification:
    """What `verify_trail` found."""

    findings: list[TamperFinding]
    rows: int
    head: str
    checked: list[Checkpoint]
    """Checkpoints whose signature verified, oldest first."""
    notes: list[str]
    """What is worth saying but is no sign of tampering (e.g. checkpoints not given)."""


def _believed(
    checkpoints: Iterable[Checkpoint], keys: Sequence[PublicKey]
) -> tuple[list[Checkpoint], list[TamperFinding]]:
    """The checkpoints one of ``keys`` signed, one per number, and why the others are not.

    A forged copy never hides the genuine checkpoint of the same number: each copy is
    checked on its own, and the forged one is reported.
    """
    by_id = {key.key_id: key for key in keys}
    believed: dict[int, Checkpoint] = {}
    findings: dict[tuple[int, str], TamperFinding] = {}
    for checkpoint in checkpoints:
        key = by_id.get(checkpoint.key_id, keys[0])
        problem = key.problem(checkpoint)
        if problem is not None:
            found = TamperFinding(None, problem, checkpoint=checkpoint.number)
            findings.setdefault((checkpoint.number, checkpoint.signature), found)
            continue
        other = believed.setdefault(checkpoint.number, checkpoint)
        if other.digest() != checkpoint.digest():
            findings.setdefault(
                (checkpoint.number, ""),
                TamperFinding(
                    None,
                    "two different checkpoints with this number are both signed: the signing "
                    "key was used by someone else",
                    checkpoint=checkpoint.number,
                ),
            )
    return sorted(believed.values(), key=lambda c: c.number), list(findings.values())


def _chain_findings(valid: Sequence[Checkpoint]) -> tuple[list[TamperFinding], list[str]]:
    findings, notes = [], []
    for earlier, later in itertools.pairwise(valid):
        if later.number != earlier.number + 1:
            notes.append(
                f"checkpoints {earlier.number + 1}-{later.number - 1} were not given: "
                f"cannot check that {later.number} follows {earlier.number}"
            )
            continue
        restarted = later.key_id != earlier.key_id and later.prev == GENESIS_HASH
        if later.prev != earlier.digest() and not restarted:
            findings.append(
                TamperFinding(
                    None,
                    f"does not name checkpoint {earlier.number} as its predecessor: "
                    "the checkpoints do not chain",
                    checkpoint=later.number,
                )
            )
        if later.seq < earlier.seq:
            findings.append(
                TamperFinding(
                    None,
                    f"vouches for {later.seq} rows, fewer than checkpoint {earlier.number} "
                    f"({earlier.seq})",
                    checkpoint=later.number,
                )
            )
    if valid and valid[0].number == 1 and valid[0].prev != GENESIS_HASH:
        findings.append(TamperFinding(None, "is the first but names a predecessor", checkpoint=1))
    return findings, notes


def verify_trail(
    audit: AuditService, checkpoints: Iterable[Checkpoint], keys: Sequence[PublicKey]
) -> Verification:
    """Check the trail's chain, every checkpoint's signature, and the trail against each.

    A checkpoint vouches that row ``seq`` existed with hash ``head``. A trail that ends before
    ``seq`` lost its tail (even with the head rewound); a row ``seq`` with another hash means
    the trail up to it was rewritten, somewhere after the last checkpoint that still matches:
    the finding names that range, whose first row is the first that can be bad.

    A checkpoint is believed when one of ``keys`` signed it (several after a change of key);
    with none, no checkpoint is checked (a note says so).
    """
    given = list(checkpoints)
    notes: list[str] = []
    findings: list[TamperFinding] = []
    valid: list[Checkpoint] = []
    if not keys and given:
        numbers = len({c.number for c in given})
        notes.append(
            f"{numbers} checkpoints were not checked: no trusted public key (give "
            "--public-key, --from-cluster or a checkpoint export)"
        )
    elif given:
        valid, findings = _believed(given, keys)
    chain, chain_notes = _chain_findings(valid)
    findings.extend(chain)
    notes.extend(chain_notes)
    walk = audit.walk(capture={c.seq for c in valid})
    findings.extend(walk.findings)
    good_seq = 0
    for checkpoint in valid:
        when = checkpoint.time.isoformat(timespec="seconds")
        if checkpoint.seq == 0:
            continue
        if checkpoint.seq > walk.last_id:
            findings.append(
                TamperFinding(
                    walk.last_id + 1,
                    f"rows {walk.last_id + 1}-{checkpoint.seq} were deleted: the trail ends at "
                    f"row {walk.last_id}, but checkpoint {checkpoint.number} signed at {when} "
                    f"vouches for {checkpoint.seq} rows",
                    checkpoint=checkpoint.number,
                )
            )
        elif walk.captured.get(checkpoint.seq) != checkpoint.head:
            first = good_seq + 1
            vouched = (
                f"row {good_seq} is the last one a checkpoint still vouches for"
                if good_seq
                else "no checkpoint vouches for an earlier row"
            )
            findings.append(
                TamperFinding(
                    first,
                    f"the trail was rewritten: row {checkpoint.seq} no longer has the hash "
                    f"checkpoint {checkpoint.number} signed at {when}; the first rewritten row "
                    f"is one of rows {first}-{checkpoint.seq} ({vouched})",
                    checkpoint=checkpoint.number,
                )
            )
        else:
            good_seq = max(good_seq, checkpoint.seq)
    if not valid:
        notes.append(
            "no signed checkpoint was checked: a deleted tail or a rewritten trail would not "
            "show (give --checkpoint FILE or --from-cluster)"
        )
    return Verification(findings, walk.last_id, walk.last_hash, valid, notes)
