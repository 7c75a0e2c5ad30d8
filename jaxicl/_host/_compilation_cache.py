"""JAX's persistent compilation cache, on by default for sweeps and the command line: running
the same study (or the main job) again in a new process loads its compiled programs instead of
compiling them (most of a small sweep's time is compiling).

The cache lives under the user's cache directory (`$XDG_CACHE_HOME/jaxicl/xla`, else
`~/.cache/jaxicl/xla`). A cache the user configured in JAX is left alone;
`JAXICL_COMPILATION_CACHE=off` (or `jaxicl --no-compilation-cache ...`) turns this one off;
another value is the directory.
"""

import os
import pathlib

import jax


OFF = ("off", "0", "false", "no", "")


def cache_directory() -> pathlib.Path | None:
    """The directory jaxicl would cache compiled programs in (None: turned off)."""
    chosen = os.environ.get("JAXICL_COMPILATION_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in OFF else pathlib.Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxicl" / "xla"


def use_compilation_cache() -> None:
    """Point JAX's persistent cache at jaxicl's directory, unless the user configured one or
    turned it off. Programs that compile in under a second are not worth a file."""
    if jax.config.jax_compilation_cache_dir:
        return
    directory = cache_directory()
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable home: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", str(directory))
