"""The host memory a run may use: physical RAM, or less under a cgroup limit (batch jobs,
containers), read from fake cgroup trees."""

import os

from jaxicl._host._memory import host_memory_bytes


PHYSICAL = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
GIB = 2**30


def _tree(tmp_path, proc_line, files):
    (tmp_path / "proc").write_text(proc_line + "\n")
    for path, text in files.items():
        (tmp_path / "cg" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / path).write_text(text + "\n")
    return dict(cgroup_root=tmp_path / "cg", proc_cgroup=tmp_path / "proc")


def test_a_v2_limit_of_the_process_or_an_ancestor_caps_it(tmp_path):
    where = _tree(
        tmp_path,
        "0::/job/step",
        {"job/step/memory.max": "max", "job/memory.max": str(3 * GIB)},
    )
    assert host_memory_bytes(**where) == min(PHYSICAL, 3 * GIB)


def test_a_v1_limit_is_read_under_the_memory_controller(tmp_path):
    where = _tree(
        tmp_path,
        "12:cpu,cpuacct:/x\n4:memory:/slurm/job_7",
        {"memory/slurm/job_7/memory.limit_in_bytes": str(2 * GIB)},
    )
    assert host_memory_bytes(**where) == min(PHYSICAL, 2 * GIB)


def test_a_container_mounting_its_own_cgroup_as_the_root_is_read_there(tmp_path):
    where = _tree(tmp_path, "0::/docker/abc", {"memory.max": str(GIB)})
    assert host_memory_bytes(**where) == min(PHYSICAL, GIB)


def test_no_limit_or_no_cgroup_files_leave_physical_memory(tmp_path):
    unlimited = _tree(tmp_path, "4:memory:/", {"memory/memory.limit_in_bytes": str(2**63 - 4096)})
    assert host_memory_bytes(**unlimited) == PHYSICAL
    missing = dict(cgroup_root=tmp_path / "none", proc_cgroup=tmp_path / "no-proc")
    assert host_memory_bytes(**missing) == PHYSICAL
