"""Who may send what: sender identity, node bindings and the registration budget.

The ingest's trust decisions, apart from its sockets (`zap` answers the
CURVE handshakes, `process` runs the loop).  Every heartbeat that passed
validation meets three questions, in this order; the first "no" names its
reject reason:

1. May its *sender* speak for this node?  ``not_authorized``, counted per
   sender.  A sender is a CURVE client key when CURVE is on (the ZAP
   handler made the key's public key the connection's User-Id), else the
   peer's IP address.  A key is bound to the node ids listed in
   ``NAME.nodes`` beside ``NAME.key`` in ``authorized_keys_dir``; a key
   without that file speaks for the node called NAME alone, and an empty
   file binds it to nothing.  Without CURVE, ``[ingest] peer_nodes_file``
   binds addresses (``ADDRESS PATTERN...`` per line, an unlisted address
   speaks for nothing); without that file any peer may speak for any node.
2. Is the node admitted at all?  ``[ingest] allow_nodes``; empty admits
   every id.  ``node_not_allowed``.
3. For a node that is not registered: does the registration budget admit
   one more now?  Token buckets, one per sender and one for all, refilled
   at ``registration_rate[_per_sender]`` new nodes per second up to
   ``registration_burst[_per_sender]``.  ``registration_rate``, counted per
   sender.  A registration that finds the registry full takes no token.

Patterns are exact ids or shell globs (`fnmatch`, case-sensitive: ``*``,
``?``, ``[...]``), matched against the whole id.

Invariants: a sender's bindings are looked up by the public key, not by the
key's file name, so a key file replaced under the same name does not carry
the old key's connections over; a `Sender` is immutable once built except
for its decision cache, and a reload builds new ones, so a decision made
under the old bindings is never reused under the new.  Every cache here is
bounded (`CACHE_MAX` entries); the sender tables are bounded by the key
files an operator wrote, and peer senders by `MAX_PEERS`.

Rules for callers: the hot path (`Sender.may_speak_for`,
`Admission.node_allowed`, `RegistrationBudget.admits`) returns status and
never raises; loading (`load_keys`, `load_peer_bindings`) raises
`BindingError` at startup, and `Admission.reload` turns each problem into a
message and drops the entry it concerns (fail closed).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable

from shm_engine.core.layout import N_SENDER_SLOTS, SENDER_NAME_BYTES

__all__ = [
    "Admission",
    "BindingError",
    "CACHE_MAX",
    "MAX_PEERS",
    "MODE_CURVE",
    "MODE_INSECURE",
    "MODE_LOOPBACK",
    "MODE_NAMES",
    "NodeSet",
    "RegistrationBudget",
    "Sender",
    "SenderCounters",
    "UNIDENTIFIED",
    "load_keys",
    "load_peer_bindings",
    "read_senders",
]

CACHE_MAX = 65536  # decisions remembered per sender (and for allow_nodes)
MAX_PEERS = 4096  # peer senders remembered; the table is rebuilt when full
MAX_PATTERN_BYTES = 255
UNIDENTIFIED = "(unidentified)"  # the sender name of frames received without metadata

# ``[ingest]`` modes, as the header's ``ingest_mode`` holds them (0: not bound yet).
MODE_LOOPBACK, MODE_INSECURE, MODE_CURVE = 1, 2, 3
MODE_NAMES = ("", "loopback", "insecure", "curve")

_GLOB_CHARS = frozenset("*?[")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


class BindingError(ValueError):
    """A key file, a ``.nodes`` file or the peer bindings file cannot be
    used; the message names the file and the problem.  Raised at startup
    (the ingest exits `EXIT_FATAL`); on a reload the entry is dropped."""


class NodeSet:
    """Node ids matched by exact ids and glob patterns.  ``in`` takes the
    id as UTF-8 bytes (what the decoder hands over)."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(patterns)
        self._exact = frozenset(
            p.encode("utf-8") for p in self.patterns if not _GLOB_CHARS.intersection(p)
        )
        globs = [p for p in self.patterns if _GLOB_CHARS.intersection(p)]
        self.everything = "*" in globs
        self._glob = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match
            if globs
            else None
        )

    def __contains__(self, node: bytes) -> bool:
        if self.everything or node in self._exact:
            return True
        return self._glob is not None and self._glob(node.decode("utf-8")) is not None

    def __bool__(self) -> bool:
        return bool(self.patterns)


def _check_pattern(pattern: str, where: str) -> str:
    if len(pattern.encode("utf-8")) > MAX_PATTERN_BYTES:
        raise BindingError(
            f"{where}: pattern {pattern[:40]!r}... is longer than {MAX_PATTERN_BYTES} bytes"
        )
    if _CONTROL.search(pattern):
        raise BindingError(f"{where}: pattern {pattern!r} contains a control character")
    return pattern


class _Membership:
    """``node in nodes``, each answer remembered (at most `CACHE_MAX`)."""

    __slots__ = ("_nodes", "_cache")

    def __init__(self, nodes: NodeSet):
        self._nodes = nodes
        self._cache: dict[bytes, bool] = {}

    def __call__(self, node: bytes) -> bool:
        ok = self._cache.get(node)
        if ok is None:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            ok = self._cache[node] = node in self._nodes
        return ok

    def all(self, nodes: list[bytes]) -> bool:
        """Every one of ``nodes`` is in: for a batch whose ids were all
        answered before, one pass in C over the answers."""
        try:
            return all(map(self._cache.__getitem__, nodes))
        except KeyError:  # an id not answered yet: answer each
            return all(self(n) for n in nodes)


class Sender:
    """One sender: a CURVE key or a peer address.

    ``name`` is what counters and logs show (the key's file name, or the
    address); ``nodes`` the ids it may speak for, None for any.  A sender
    bound to no node (``nodes`` empty: a revoked key, an unlisted address)
    has its frames refused whole, undecoded."""

    __slots__ = ("name", "nodes", "refused", "_member")

    def __init__(self, name: str, nodes: NodeSet | None):
        self.name = name
        self.nodes = None if nodes is not None and nodes.everything else nodes
        self.refused = nodes is not None and not nodes
        self._member = None if self.nodes is None else _Membership(self.nodes)

    def may_speak_for(self, node: bytes) -> bool:
        return self._member is None or self._member(node)

    def may_speak_for_all(self, nodes: list[bytes]) -> bool:
        return self._member is None or self._member.all(nodes)


def _read_patterns(path: str) -> list[str]:
    """The patterns of a ``.nodes`` file: one a line, ``#`` comments and
    blank lines skipped."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise BindingError(f"{path}: not UTF-8 (byte {err.start})") from err
    except OSError as err:
        raise BindingError(f"{path}: cannot read: {err.strerror or err}") from err
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(_check_pattern(line, path))
    return out


def load_keys(directory: str, strict: bool = True) -> tuple[dict[str, Sender], list[str]]:
    """The CURVE senders of ``directory``: Z85 public key -> `Sender`, from
    every ``NAME.key`` (zmq.auth certificate format) and its ``NAME.nodes``.

    With ``strict`` the first problem raises `BindingError`; otherwise the
    key concerned is left out and the problem returned in the list."""
    import zmq.auth

    problems: list[str] = []

    def problem(text: str) -> None:
        if strict:
            raise BindingError(text)
        problems.append(text)

    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        problem(f"{directory}: cannot list authorized keys: {err.strerror or err}")
        return {}, problems
    senders: dict[str, Sender] = {}
    owner: dict[str, str] = {}
    for file in names:
        if not file.endswith(".key"):
            continue
        name, path = file[:-4], os.path.join(directory, file)
        try:
            public, _secret = zmq.auth.load_certificate(path)
            z85 = public.decode("ascii")
            if len(z85) != 40:
                raise ValueError("not a 40-character Z85 public key")
        except (OSError, ValueError, UnicodeDecodeError) as err:
            problem(f"{path}: not a CURVE public key file: {err}")
            continue
        if z85 in senders:
            problem(f"{path}: the same public key as {owner[z85]}.key")
            continue
        nodes_path = os.path.join(directory, name + ".nodes")
        try:
            patterns = (
                _read_patterns(nodes_path)
                if os.path.exists(nodes_path)
                else [_check_pattern(name, path)]
            )
        except BindingError as err:
            problem(str(err))
            continue
        senders[z85] = Sender(name, NodeSet(patterns))
        owner[z85] = name
    return senders, problems


def load_peer_bindings(path: str, strict: bool = True) -> tuple[dict[str, NodeSet], list[str]]:
    """``[ingest] peer_nodes_file``: address -> `NodeSet`, from lines
    ``ADDRESS PATTERN [PATTERN...]`` (``#`` comments, blank lines skipped;
    an address on several lines gets all their patterns).  ``strict`` as in
    `load_keys`."""
    problems: list[str] = []
    try:
        patterns = _read_patterns(path)
    except BindingError as err:
        if strict:
            raise
        return {}, [str(err)]
    table: dict[str, list[str]] = {}
    for line in patterns:
        address, *globs = line.split()
        if not globs:
            text = f"{path}: {address!r} has no node pattern after it"
            if strict:
                raise BindingError(text)
            problems.append(text)
            continue
        table.setdefault(address, []).extend(globs)
    return {a: NodeSet(g) for a, g in table.items()}, problems


class _Bucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), now

    def level(self, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens


class RegistrationBudget:
    """New registrations per second, per sender and overall (a burst of 0
    turns that bucket off).  `admits` asks, `charge` takes one token from
    both buckets once the registration succeeded."""

    def __init__(self, rate: float, burst: int, rate_per_sender: float, burst_per_sender: int):
        self._rate, self._burst = rate_per_sender, burst_per_sender
        self._all = _Bucket(rate, burst, 0.0) if burst else None
        self._senders: dict[str, _Bucket] = {}

    def admits(self, sender: str, now: float) -> bool:
        if self._all is not None and self._all.level(now) < 1.0:
            return False
        if not self._burst:
            return True
        bucket = self._senders.get(sender)
        if bucket is None:
            if len(self._senders) >= MAX_PEERS:
                self._prune(now)
            bucket = self._senders[sender] = _Bucket(self._rate, self._burst, now)
        return bucket.level(now) >= 1.0

    def charge(self, sender: str) -> None:
        if self._all is not None:
            self._all.tokens -= 1.0
        bucket = self._senders.get(sender)
        if bucket is not None:
            bucket.tokens -= 1.0

    def _prune(self, now: float) -> None:
        """Drop the buckets that refilled (a fresh one is the same); if none
        did, the oldest half (the overall bucket still bounds them all)."""
        full = [s for s, b in self._senders.items() if b.level(now) >= b.burst]
        for s in full or list(self._senders)[: len(self._senders) // 2]:
            del self._senders[s]


class Admission:
    """The decisions of one ingest: its senders, ``allow_nodes`` and the
    registration budget, built from ``[ingest]`` (``ic``).

    ``keys``: Z85 -> `Sender` when CURVE is on (`load_keys`), else None;
    ``peers``: `load_peer_bindings` of ``peer_nodes_file``, or None."""

    def __init__(
        self, ic, keys: dict[str, Sender] | None = None, peers: dict[str, NodeSet] | None = None
    ):
        self.keys = keys
        self.peers = peers
        allowed = NodeSet(ic.allow_nodes)
        self._allowed = _Membership(allowed) if allowed and not allowed.everything else None
        self.budget = RegistrationBudget(
            ic.registration_rate,
            ic.registration_burst,
            ic.registration_rate_per_sender,
            ic.registration_burst_per_sender,
        )
        self._peer_senders: dict[str, Sender] = {}
        self._revoked: dict[str, Sender] = {}
        # Names of the keys loaded since start, so a revoked key's refusals
        # are counted under its name.
        self._key_names = {z85: s.name for z85, s in (keys or {}).items()}
        self.unidentified = Sender(UNIDENTIFIED, None)

    @property
    def identifies_every_frame(self) -> bool:
        """Whether every frame's sender matters (bindings are in force)."""
        return self.keys is not None or self.peers is not None

    @property
    def restricts_nodes(self) -> bool:
        """Whether any heartbeat can be refused for its node id."""
        return self._allowed is not None or self.identifies_every_frame

    def node_allowed(self, node: bytes) -> bool:
        return self._allowed is None or self._allowed(node)

    def all_allowed(self, nodes: list[bytes]) -> bool:
        return self._allowed is None or self._allowed.all(nodes)

    def sender_of_key(self, user_id: str | None) -> Sender:
        """The sender of a frame whose ZAP User-Id is ``user_id`` (a Z85
        public key); a key that is no longer authorized is refused."""
        sender = (self.keys or {}).get(user_id) if user_id else None
        if sender is None:
            sender = self._revoked.get(user_id or "")
            if sender is None:
                if len(self._revoked) >= MAX_PEERS:
                    self._revoked.clear()
                known = self._key_names.get(user_id or "")
                name = (
                    f"{known} (revoked)"
                    if known
                    else f"unknown key {user_id[:8]}"
                    if user_id
                    else "(no User-Id)"
                )
                sender = self._revoked[user_id or ""] = Sender(name, NodeSet(()))
        return sender

    def sender_of_peer(self, address: str | None) -> Sender:
        """The sender of a frame from peer ``address`` (None: unknown, e.g.
        an ipc:// peer)."""
        sender = self._peer_senders.get(address or "")
        if sender is None:
            if len(self._peer_senders) >= MAX_PEERS:
                self._peer_senders.clear()
            name = address or "(no address)"
            nodes = None if self.peers is None else self.peers.get(address or "", NodeSet(()))
            sender = self._peer_senders[address or ""] = Sender(name, nodes)
        return sender

    def reload(self, keys_dir: str | None, peers_file: str | None) -> list[str]:
        """Load the key and peer bindings again (SIGHUP); returns the
        problems, each of which left its entry out.  Senders built before
        are dropped: later frames get the new bindings."""
        problems: list[str] = []
        if keys_dir is not None:
            self.keys, problems = load_keys(keys_dir, strict=False)
            self._revoked = {}
            if len(self._key_names) >= MAX_PEERS:
                self._key_names.clear()
            self._key_names.update((z85, s.name) for z85, s in self.keys.items())
        if peers_file is not None:
            self.peers, more = load_peer_bindings(peers_file, strict=False)
            problems += more
        self._peer_senders = {}
        return problems


OTHERS = "(others)"


class SenderCounters:
    """Refusals per sender in the segment header (``sender_*`` fields), for
    ``status``: one row per sender in the order of its first refusal; once
    all rows but the last are taken, every further sender counts in the
    last one, named `OTHERS`.  So the header holds a bounded number of
    names, whoever sends.  The ingest is the only writer; a row's name is
    written before ``senders_used`` counts it (x86-64 TSO keeps that order
    for readers), and a new ingest adopts the rows of the previous one."""

    def __init__(self, header):
        self._h = header
        self._names = header.sender_names.reshape(N_SENDER_SLOTS, SENDER_NAME_BYTES)
        self._rows = {name: row for row, name in enumerate(read_sender_names(header))}

    def add(self, sender_name: str, column, n: int = 1) -> None:
        """Add ``n`` to ``column`` (a ``sender_*`` header field) for the sender."""
        row = self._rows.get(sender_name)
        if row is None:
            row = self._new_row(sender_name)
        column[row] += n

    def _new_row(self, sender_name: str) -> int:
        used = int(self._h.senders_used[0])
        if used < N_SENDER_SLOTS - 1:
            name = sender_name
        elif used == N_SENDER_SLOTS - 1:
            name = OTHERS
        else:
            return N_SENDER_SLOTS - 1
        data = name.encode("utf-8")[: SENDER_NAME_BYTES - 1]
        self._names[used] = 0
        self._names[used, : len(data)] = list(data)
        self._h.senders_used[0] = used + 1  # after the name: see the class docstring
        self._rows[name] = used
        return used


def read_sender_names(header) -> list[str]:
    """The names of the sender rows in use, in row order."""
    names = header.sender_names.reshape(N_SENDER_SLOTS, SENDER_NAME_BYTES)
    used = min(int(header.senders_used[0]), N_SENDER_SLOTS)
    return [bytes(names[i]).split(b"\0", 1)[0].decode("utf-8", "replace") for i in range(used)]


def read_senders(header) -> dict[str, dict[str, int]]:
    """Sender name -> its refusal counts, as ``status`` shows them."""
    return {
        name: {
            "not_authorized": int(header.sender_not_authorized[i]),
            "registration_rate": int(header.sender_registration_rate[i]),
        }
        for i, name in enumerate(read_sender_names(header))
    }
