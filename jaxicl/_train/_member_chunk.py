"""`member_chunk="auto"`: how many members a CPU step maps at once, from XLA's memory analysis
of the workload and the caches of the machine it runs on.

On CPU a chunk of members is fastest when its step's temporaries (score tensors, softmax, their
gradients) stay close to the core: all members at once stream them through memory, while too
few members leave the vector lanes and the products (members are their wide axis) narrow. So
the chunk is the largest power of two whose temporaries, as XLA's memory analysis of one
compiled step counts them per member, fit in the core's share of L2; when fewer than a
vector's width of members (16: fp32 lanes of AVX-512) fit there, as many up to that width as
fit in the core's share of L3. Tiny per-member states (the reduced flow) fit hundreds of
members in L2; attention members (~0.26 MB each) take the vector's width; members of several
MB (large particle systems) take fewer.

Measured on a 2-core EPYC (L2 512 KB a core, L3 32 MB), 1,024 attention members: 16 ran
within noise of the best chunk, 32 (what filling the L3 share chose before) ran 0.75–1.0× it
and 64 0.75×. Accelerators, and ensembles of at most 16 members a device, map all members at
once. The analysis compiles one step once per workload and process; results never depend on
the chunk.
"""

import functools
import glob
import hashlib
import os

import jax


# when the cache sizes cannot be read (no Linux sysfs): common per-core L2 and L3 shares
_FALLBACK_CACHES = (2**20, 4 * 2**20)
# members in the probe program: enough that per-member temporaries dominate its fixed part
PROBE_MEMBERS = 64
# the fewest members a chunk should hold: one vector of fp32 lanes (AVX-512)
VECTOR_MEMBERS = 16


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_count(cpu_list: str) -> int:
    """CPUs in a sysfs list such as "0-3,8"."""
    count = 0
    for part in cpu_list.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


@functools.cache
def cache_bytes_per_core() -> tuple[int, ...]:
    """Each data cache level from L2 up, as bytes per core that shares it (CPU 0's, from Linux
    sysfs), or common sizes when they cannot be read."""
    levels = {}
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        level, kind = _read(f"{index}/level"), _read(f"{index}/type")
        size, shared = _read(f"{index}/size"), _read(f"{index}/shared_cpu_list")
        if None in (level, kind, size, shared) or kind == "Instruction" or int(level) < 2:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit():
            levels[int(level)] = int(digits) * scale // _cpu_count(shared)
    return tuple(levels[k] for k in sorted(levels)) or _FALLBACK_CACHES


_TEMP_BYTES_PER_MEMBER: dict[str, float] = {}


def temp_bytes_per_member(lowered, n_members: int) -> float:
    """XLA's temporary bytes of the lowered one-step program of `n_members`, per member
    (compiled once per distinct program in this process)."""
    key = hashlib.sha256(lowered.as_text().encode()).hexdigest()
    if key not in _TEMP_BYTES_PER_MEMBER:
        analysis = lowered.compile().memory_analysis()
        _TEMP_BYTES_PER_MEMBER[key] = analysis.temp_size_in_bytes / n_members
    return _TEMP_BYTES_PER_MEMBER[key]


def _fitting(bytes_per_member: float | int, budget: int) -> int:
    """The largest power of two of members whose temporaries fit in `budget` bytes (≥ 1)."""
    chunk = 1
    while 2 * chunk * bytes_per_member <= budget:
        chunk *= 2
    return chunk


def chunk_for_caches(bytes_per_member: float | int, caches: tuple, n_members: int) -> int | None:
    """The largest power of two of members whose temporaries fit in the first of `caches`
    (bytes a core, L2 first); when that is under `VECTOR_MEMBERS`, as many up to
    `VECTOR_MEMBERS` as fit in the last; `None` (all at once) when every member fits in L2."""
    if bytes_per_member * n_members <= caches[0]:
        return None
    chunk = _fitting(bytes_per_member, caches[0])
    if chunk < VECTOR_MEMBERS:
        chunk = min(VECTOR_MEMBERS, _fitting(bytes_per_member, caches[-1]))
    return None if chunk >= n_members else chunk


def auto_member_chunk(lower_probe, n_members: int, n_devices: int) -> int | None:
    """The chunk for `n_members` on each of `n_devices` local devices; `lower_probe(k)` lowers
    the one-step program of k members."""
    if jax.default_backend() != "cpu" or n_members <= VECTOR_MEMBERS:
        # Up to a vector of members, all at once: the probe's compile costs seconds that small
        # ensembles (tests, notebooks, single runs) do not earn back. It can cost speed (the
        # mean-field solver at 4 members a device ran 1.3× faster one at a time).
        return None
    probe = min(n_members, PROBE_MEMBERS)
    per_member = temp_bytes_per_member(lower_probe(probe), probe)
    cores_per_device = max(1, (os.cpu_count() or 1) // n_devices)
    caches = tuple(c * cores_per_device for c in cache_bytes_per_core())
    return chunk_for_caches(per_member, caches, n_members)
