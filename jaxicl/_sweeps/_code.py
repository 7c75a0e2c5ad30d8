"""The code a store's numbers came from: a fingerprint of the study's class (the source file of
the module that defines it, or the class's own source when there is no file) and jaxicl's
version. A resume under other code is refused unless the caller accepts it, and an accepted
change is recorded in the store: a store never silently mixes chunks of two versions.
"""

import datetime
import hashlib
import importlib.metadata
import inspect
import pathlib


def _source(cls) -> str | None:
    try:
        path = inspect.getsourcefile(cls)
        if path is not None and pathlib.Path(path).is_file():
            return pathlib.Path(path).read_text(encoding="utf-8", errors="replace")
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return None


def code_fingerprint(study) -> dict:
    """`{"class", "source", "jaxicl"}`: the study's class, a SHA-256 of its module's source
    (None when no source can be found, e.g. a class typed into an interactive prompt), and
    jaxicl's version."""
    cls = type(study)
    source = _source(cls)
    digest = None if source is None else hashlib.sha256(source.encode()).hexdigest()[:16]
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "source": digest,
        "jaxicl": importlib.metadata.version("jaxicl"),
    }


def check_code(root, path, study, *, allow_code_change: bool) -> None:
    """Refuse resuming the store `root` (at `path`) under other code than it was started with,
    or, with `allow_code_change`, record the change in its `code_changes` attribute."""
    now = code_fingerprint(study)
    stored = root.attrs.get("code")
    if stored is None:  # a store from before fingerprints: nothing to compare
        root.attrs["code"] = now
        return
    stored = dict(stored)
    if stored == now:
        return
    changed = [key for key in ("class", "source", "jaxicl") if stored.get(key) != now[key]]
    what = ", ".join(f"{key} {stored.get(key)} → {now[key]}" for key in changed)
    if not allow_code_change:
        raise ValueError(
            f"{path} was started with other code of {now['class']} ({what}); resuming would mix "
            "results of two versions. Resume with `allow_code_change=True` (`jaxicl sweep "
            "--allow-code-change`) to accept the change (it is recorded in the store), or start "
            "a new store."
        )
    changes = list(root.attrs.get("code_changes", []))
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    changes.append({"from": stored, "to": now, "accepted_at": when})
    root.attrs["code_changes"] = changes
    root.attrs["code"] = now
