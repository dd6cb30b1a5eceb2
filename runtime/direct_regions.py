"""Object code of region functions, shared by every kernel that calls them.

compiler/direct_regions.py gives each region function of the direct back end a module of
its own, named by the hash of its text. Here those modules meet the disk cache: a region
that an earlier kernel (in any process) compiled is linked from that kernel's region
object; the regions no cached object holds are compiled (with the kernel's own module,
runtime/direct_llvm.py) into new objects (`regions/group-*.o`, beside the kernels'
`direct/`): one a region where several threads compile, one for all where one does. An
index entry per region (`regions/<key>.json`) records which object holds it and that
object's SHA-256.
An object whose bytes do not match is not linked: its regions are compiled again
(docs/compiler.md, "Regions shared across programs").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .cache import atomic_write, cache_root, count_regions, log, repaired

if TYPE_CHECKING:
    from .direct_llvm import Batch

__all__ = ["Pending", "RegionStream", "pending_regions", "region_groups", "store_regions"]

_FORMAT = 1


def _key(text: str) -> str:
    """What a region's object code depends on: its module's text and the machine's."""
    from .native_cache import light_target  # (cached: read once per process)

    return hashlib.sha256(f"{_FORMAT}\n{light_target()}\n{text}".encode()).hexdigest()


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime) -> SHA-256: an object read once


def _digest(path: Path) -> str | None:
    try:
        info = path.stat()
        key = (str(path), info.st_size, info.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return _DIGESTS[key]


def _folder() -> Path:
    return cache_root() / "regions"


def _cached(folder: Path, symbol: str, key: str) -> Path | None:
    """The object holding the region, when its index entry and bytes are in order."""
    entry = folder / f"{key}.json"
    try:
        record = json.loads(entry.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        repaired(f"direct: {entry} is unreadable; compiling {symbol} again")
        return None
    if not isinstance(record, dict) or record.get("format") != _FORMAT \
            or record.get("symbol") != symbol or not isinstance(record.get("object"), str):
        repaired(f"direct: {entry} is not {symbol}'s record; compiling it again")
        return None
    path = folder / Path(record["object"]).name
    if _digest(path) != record.get("sha256"):
        repaired(f"direct: {path} is missing or does not match its record;"
                  f" compiling {symbol} again")
        return None
    return path


class Pending(NamedTuple):
    """A kernel's regions against the cache: the objects that hold the regions an earlier
    kernel compiled, and the rest, in groups of symbols that compile into one object
    each."""

    found: list[Path]
    groups: list[list[str]]


def pending_regions(regions: dict[str, str]) -> Pending:
    """Which of the kernel's region functions (symbol -> module text) the cache holds; the
    rest in one group (one LLVM pipeline, for one thread)."""
    found: dict[Path, None] = {}
    missing: list[str] = []
    for symbol, text in regions.items():
        path = _cached(_folder(), symbol, _key(text))
        if path is None:
            missing.append(symbol)
        else:
            found[path] = None
    return Pending(list(found), region_groups(missing, separately=False))


class RegionStream:
    """The translator's `on_region`: each region module, as soon as it is written, is
    looked up in the cache, and one the cache lacks is added to the batch (compiled
    while the rest is translated), a group and object of its own."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.found: dict[Path, None] = {}
        self.groups: list[list[str]] = []
        self.jobs: list[int] = []  # the batch's index of each group's object

    def __call__(self, symbol: str, text: str) -> None:
        path = _cached(_folder(), symbol, _key(text))
        if path is not None:
            self.found[path] = None
            return
        self.groups.append([symbol])
        self.jobs.append(self.batch.add(text))

    def pending(self) -> Pending:
        return Pending(list(self.found), self.groups)


def region_groups(symbols: list[str], separately: bool) -> list[list[str]]:
    """The symbols in groups that compile into one object each."""
    if separately:
        return [[symbol] for symbol in symbols]
    return [symbols] if symbols else []


def store_regions(regions: dict[str, str], pending: Pending, objects: list[bytes]
                  ) -> list[Path]:
    """The region objects a kernel links: the cached ones, and those of its groups, which
    `objects` holds (compiled now), written to the cache with an index entry for each of
    their regions."""
    folder = _folder()
    paths = list(pending.found)
    for group, obj in zip(pending.groups, objects, strict=True):
        keys = {_key(regions[symbol]): symbol for symbol in group}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ("group-" + hashlib.sha256(
            "\n".join(sorted(keys)).encode()).hexdigest()[:24] + ".o")
        atomic_write(path, obj)
        digest = hashlib.sha256(obj).hexdigest()
        for key, symbol in keys.items():
            atomic_write(folder / f"{key}.json", json.dumps(
                {"format": _FORMAT, "symbol": symbol, "object": path.name,
                 "sha256": digest}))
        paths.append(path)
    compiled = sum(map(len, pending.groups))
    if compiled:
        log(f"direct: compiled {compiled} region(s) into {len(pending.groups)} object(s);"
            f" {len(regions) - compiled} from earlier kernels")
    count_regions(compiled, len(regions) - compiled)
    return paths
