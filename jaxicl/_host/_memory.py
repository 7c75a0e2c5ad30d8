"""The memory this process may use on the host: physical RAM, or less under a cgroup limit.

A batch job (SLURM `--mem`), a container or a CI runner caps a process with a cgroup; past the
cap the kernel kills it without a word. Estimates compared against physical RAM alone would
let such a run start and be killed, so the smallest limit on the way up wins."""

import os
import pathlib


def host_memory_bytes(cgroup_root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup") -> int:
    """Physical RAM, or the smallest memory limit of this process's cgroups (v1 or v2) and
    their ancestors, whichever is smaller."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits = [physical]
    for directory, filename in _limit_files(pathlib.Path(cgroup_root), pathlib.Path(proc_cgroup)):
        try:
            text = (directory / filename).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # v2 writes "max" for no limit, v1 a huge number
            limits.append(int(text))
    return min(limits)


def _limit_files(root: pathlib.Path, proc_cgroup: pathlib.Path):
    """(directory, limit file) of every cgroup level this process sits under."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy mounted at the root
            base, filename = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, filename = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        # Inside a container the process's own cgroup is often mounted as the root: try the
        # path below the mount and each ancestor, the mount itself included.
        parts = pathlib.PurePosixPath(path).relative_to("/").parts
        for depth in range(len(parts), -1, -1):
            yield base.joinpath(*parts[:depth]), filename
