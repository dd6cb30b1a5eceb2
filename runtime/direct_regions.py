"""Object code of region functions, shared by every kernel that calls them.

compiler/direct_regions.py gives each region function of the direct back end a module of
its own, named by the hash of its text. Here those modules meet the disk cache: a region
that an earlier kernel (in any process) compiled is linked from that kernel's region
object; the regions no cached object holds are compiled together, as one module, into a
new object (`regions/group-*.o`, beside the kernels' `direct/`), and an index entry per
region (`regions/<key>.json`) records which object holds it and that object's SHA-256.
An object whose bytes do not match is not linked: its regions are compiled again
(docs/compiler.md, "Regions shared across programs").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from .cache import atomic_write, cache_root, count_regions, log, repaired

__all__ = ["region_objects"]

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


def region_objects(regions: dict[str, str], compile_modules: Callable[..., bytes]
                   ) -> list[Path]:
    """The region objects a kernel links for its region functions (symbol -> module
    text): cached ones, and one new object of those no cached object holds, compiled by
    `compile_modules(*texts)`."""
    folder = cache_root() / "regions"
    found: dict[Path, None] = {}
    missing: dict[str, str] = {}  # key -> symbol
    for symbol, text in regions.items():
        key = _key(text)
        path = _cached(folder, symbol, key)
        if path is None:
            missing[key] = symbol
        else:
            found[path] = None
    if missing:
        obj = compile_modules(*(regions[symbol] for symbol in missing.values()))
        folder.mkdir(parents=True, exist_ok=True)
        group = folder / ("group-" + hashlib.sha256(
            "\n".join(sorted(missing)).encode()).hexdigest()[:24] + ".o")
        atomic_write(group, obj)
        digest = hashlib.sha256(obj).hexdigest()
        for key, symbol in missing.items():
            atomic_write(folder / f"{key}.json", json.dumps(
                {"format": _FORMAT, "symbol": symbol, "object": group.name,
                 "sha256": digest}))
        log(f"direct: compiled {len(missing)} region(s) into {group.name};"
            f" {len(regions) - len(missing)} from earlier kernels")
        found[group] = None
    count_regions(len(missing), len(regions) - len(missing))
    return list(found)
