"""Atomic writes: every file ttforge writes appears complete or not at all.

A file is written to a temporary name in its target's directory, flushed to disk and
renamed over the target with ``os.replace`` (atomic on POSIX within one file system),
so an error, a full disk or Ctrl-C never leaves a half-written file under the real
name, and never a stray temporary either. A directory of files is built the same way,
in a temporary directory next to it, then renamed into place.

Paths that cannot be written (the parent is a file, the target is a directory, no
permission) are one-line :class:`~ttforge.errors.OutputError` s naming the path and
the fix; errors raised by the caller's own code inside :func:`atomic_path` and
:func:`atomic_dir` pass through unchanged (after the temporaries are removed).

What a write never destroys (docs/hardening.md):

- anything but a regular file: an existing target that is a device, a FIFO or a socket
  is refused (``-o /dev/null`` is never replaced by a file);
- an input of the running command: inside :func:`command_inputs` (every ``ttforge``
  command runs in one) a target that is the same file (same inode) as an input, or a
  directory to be replaced that holds an input, is refused;
- a directory's files it did not write: :func:`atomic_dir` with ``owner`` replaces an
  existing directory only if ``owner`` recognises all of it (:func:`check_owned_dir`).

Temporaries are named ``.<name>.ttforge-<pid>.<random>.tmp`` (``.old`` for a directory
moved aside); a process killed while writing (SIGKILL, power loss) leaves one behind,
and the next write next to the same target removes it once that process is gone (a
directory moved aside is put back if its replacement never arrived).

This module imports nothing heavy (``hw`` uses it and knows nothing of PyTorch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from ttforge.errors import EXIT_USER, ConfigError, OutputError, OutputFailure, file_path, show_path
from ttforge.limits import broken_link, file_kind

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "atomic_dir",
           "write_files_atomically", "check_output_file", "check_output_dir", "make_output_dir",
           "command_inputs", "note_input", "check_not_input", "check_owned_dir", "clean_stale", "dead_entries",
           "staging_dir", "commit_dir", "replace_dir", "claim_work_dir", "sha256_file", "WORK_MARKER",
           "output_lock", "cache_lock", "job_dir", "JOB_MARKER", "check_run_dir", "check_run_files", "check_writable",
           "read_marker", "missing_dirs", "remove_made_dirs", "remove_unused_dirs", "discard_dir", "reclaim_work_dir",
           "temp_prefix", "current_umask", "names_file"]

#: The file that marks a directory as ttforge's work directory (``--keep DIR``).
WORK_MARKER = ".ttforge-work"

_TAG = "ttforge-"


def temp_prefix(name: str) -> str:
    """The temporary-name prefix of this process for a target called ``name``."""
    return f".{name}.{_TAG}{os.getpid()}."


# ------------------------------------------------------------------------- the command's inputs
_inputs: list[tuple[str, int, int, bool]] | None = None   # (path, st_dev, st_ino, is_dir)


@contextlib.contextmanager
def command_inputs(paths: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """While the block runs, no atomic write may destroy one of ``paths`` (nor any path
    given to :func:`note_input`): writing over the same file (same inode, through any
    name, link or symlink) is a one-line :class:`OutputError`, and so is replacing a
    directory that holds one. ``ttforge.cli.main`` runs every command in one, with every
    existing path of its command line except the outputs. The work directories
    :func:`claim_work_dir` claims inside the block are held until it ends."""
    global _inputs, _claims
    saved, saved_claims = _inputs, _claims
    _inputs = [] if saved is None else list(saved)
    _claims = []
    try:
        for p in paths:
            note_input(p)
        yield
    finally:
        claims, _inputs, _claims = _claims, saved, saved_claims
        for key in reversed(claims):
            _release(key, claim=True)


def note_input(path: str | os.PathLike) -> None:
    """Record ``path`` as an input of the running command (nothing outside
    :func:`command_inputs`; nothing if it does not exist)."""
    if _inputs is None:
        return
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    _inputs.append((os.path.abspath(os.fsdecode(path)), st.st_dev, st.st_ino, stat.S_ISDIR(st.st_mode)))


def check_not_input(path: str | os.PathLike, flag: str = "-o", *, tree: bool = False,
                    spare: Iterable[str] = ()) -> None:
    """One-line :class:`OutputError` if ``path`` is an input of the running command, or
    (``tree``: a directory about to be replaced) holds one outside its top-level entries
    named in ``spare`` (which survive the replacement)."""
    if not _inputs:
        return
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return  # a new path: it cannot be an input
    # the writers call this with no flag (they know only the path, a link resolved):
    # "the output" still says which side of the command the path is
    where = f"{flag} {show_path(path)}" if flag else f"the output {show_path(path)}"
    for name, dev, ino, _is_dir in _inputs:
        if (st.st_dev, st.st_ino) == (dev, ino):
            raise OutputError(f"{where} is the input {show_path(name)} (the same file); writing it "
                              f"would destroy the input; choose another output path")
    if tree and stat.S_ISDIR(st.st_mode):
        top = os.path.realpath(path)
        for name, _dev, _ino, _is_dir in _inputs:
            real = os.path.realpath(name)
            if os.path.commonpath([top, real]) == top and not (
                    real != top and os.path.relpath(real, top).split(os.sep)[0] in set(spare)):
                raise OutputError(f"{where} holds the input {show_path(name)}; replacing the "
                                  f"directory would delete it; choose another output path")


# ------------------------------------------------------------------------- stale temporaries
def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True   # someone else's process (or nonsense): leave its files alone
    return True


def dead_entries(parent: str | os.PathLike, head: str, sep: str = ".") -> list[tuple[os.DirEntry, str]]:
    """The entries of ``parent`` named ``<head><pid><sep><tail>`` whose process has
    ended (``tail`` not empty), each with its ``tail``: what a killed ttforge process
    left behind. Another user's process, or a name that is not one of these, is kept."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(head)]
    except OSError:
        return []
    dead = []
    for e in entries:
        pid_text, _, tail = e.name[len(head):].partition(sep)
        if pid_text.isdigit() and tail and not _alive(int(pid_text)):
            dead.append((e, tail))
    return dead


#: The file inside a job directory that says ttforge made it (and may remove it).
JOB_MARKER = ".ttforge-job"


def _pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[4026531836]``), or ``None`` where it cannot
    be read (no ``/proc``)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


#: The line of :data:`JOB_MARKER` naming the PID namespace of the job's process.
_NAMESPACE_LINE = "pid namespace: "


def _job_of_another_namespace(marker: str) -> bool:
    """Whether the job ``marker`` records ran in another PID namespace than this process
    (or in one that cannot be compared), whose process ids say nothing here: a container
    sharing ``$TMPDIR`` with the host has pids of its own, and a running job of it looked
    dead and lost its directory. A marker without the line (before it was written) is
    judged by its pid alone, as it was; so are those of a system without ``/proc``
    (both say ``unknown``)."""
    try:
        with open(marker, "rb", opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW)) as f:
            text = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return True   # unreadable: not ours to judge
    for line in text.splitlines():
        if line.startswith(_NAMESPACE_LINE):
            return line[len(_NAMESPACE_LINE):] != (_pid_namespace() or "unknown")
    return False


def _working_dirs() -> list[str]:
    """The working directories of this machine's processes that can be read (Linux:
    ``/proc/<pid>/cwd``; elsewhere none), read once per cleanup: a scan per leftover
    directory cost ~2 us a process each (10,000 processes and 100 leftovers: 2 s a job)."""
    try:
        pids = [n for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []
    cwds = []
    for pid in pids:
        try:
            cwds.append(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue   # ended meanwhile, or another user's
    return cwds


def _worked_in(path: str, cwds: list[str]) -> bool:
    """Whether a process of ``cwds`` (:func:`_working_dirs`) works in directory ``path``
    (there or below): a simulator orphaned by a killed ttforge run (``vvp`` runs on
    after a SIGKILL of its parent) whose directory was removed under it had cocotb make
    it again for its ``results.xml``, without the marker, and nothing ever removed it."""
    top = os.path.realpath(path)
    return any(cwd == top or cwd.startswith(top + os.sep) for cwd in cwds)


def job_dir(prefix: str) -> Path:
    """A new temporary directory for one simulation job, named ``<prefix><pid>-...`` and
    holding :data:`JOB_MARKER` (which names this process's PID namespace); those of
    ttforge processes that have ended are removed first, if they hold the marker (a
    directory of that name someone else made is never deleted: the name alone was
    taken as proof) and ran in this PID namespace (a pid of another says nothing of
    its process here), and no process works in it any more (a simulator the killed run
    left running goes on writing there; a later job removes it). A job that fails keeps
    its directory (its error names the ``sim.log`` in it) until then: without the
    process id in the name nothing ever removed them."""
    base = Path(tempfile.gettempdir())
    cwds: list[str] | None = None
    for e, _ in dead_entries(base, prefix, "-"):
        marker = os.path.join(e.path, JOB_MARKER)
        if not (e.is_dir(follow_symlinks=False) and os.path.isfile(marker)
                and not _job_of_another_namespace(marker)):
            continue
        if cwds is None:
            cwds = _working_dirs()
        if not _worked_in(e.path, cwds):
            shutil.rmtree(e.path, ignore_errors=True)
    d = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    try:
        (d / JOB_MARKER).write_text("a ttforge job's work files; removed once its process has ended\n"
                                    f"{_NAMESPACE_LINE}{_pid_namespace() or 'unknown'}\n")
    except BaseException as e:
        # without its marker no later job would ever remove it (a Ctrl-C, a full disk)
        shutil.rmtree(d, ignore_errors=True)
        _name_output(e, d / JOB_MARKER)   # a full $TMPDIR's write names no file
        raise
    return d


def clean_stale(parent: str | os.PathLike, name: str) -> list[Path]:
    """Remove the temporaries for target ``parent/name`` left by ttforge processes that
    no longer run (their names carry the process id); a directory moved aside whose
    replacement never arrived is put back. Returns what was removed."""
    parent = Path(parent)
    removed: list[Path] = []
    for e, tail in dead_entries(parent, f".{name}.{_TAG}"):
        p = Path(e.path)
        target = parent / name
        try:
            if tail.endswith(".old") and not os.path.lexists(target):
                os.replace(p, target)   # the old output, moved aside by a killed run: back
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed


# ------------------------------------------------------------------------- owned directories
def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read in blocks of 1 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_marker(path: Path, limit: int = 1 << 24) -> object:
    """The JSON of an output directory's record file ``path`` (a regular file, not a
    link, of at most ``limit`` bytes), or ``None`` when it is none of that."""
    if not (path.is_file() and not path.is_symlink() and path.stat().st_size < limit):
        return None
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _entries(top: Path, subdirs: Iterable[str]) -> list[Path]:
    """Every entry of ``top``'s tree that is not a directory (a link to one included),
    ttforge's own stale temporaries aside; the top-level directories named in ``subdirs``
    are not entered (iterative: a deep tree is no recursion limit)."""
    skip, present, stack = set(subdirs), [], [(top, True)]
    while stack:
        d, first = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    if not (first and e.name in skip):
                        stack.append((Path(e.path), False))
                elif not (e.name.startswith(".") and _TAG in e.name):
                    present.append(Path(e.path))
    return sorted(present)


def check_owned_dir(out: str | os.PathLike, marker: str, fmt: str,
                    files_of: Callable[[dict], Mapping[str, str | Iterable[str] | None]], *,
                    flag: str = "-o", command: str = "ttforge", subdirs: Iterable[str] = (),
                    limit: int = 1 << 24) -> dict:
    """An existing, non-empty ``out`` may be replaced only if it is ``command``'s own
    output, recognised by content: ``marker`` (at most ``limit`` bytes) is a JSON object
    with ``format`` ``fmt``, ``files_of(manifest)`` lists the other files it wrote (name
    -> sha256, several sha256s any of which it may hold, or ``None`` for "any content"),
    and every file in ``out`` is the marker or one of them with that content (ttforge's
    own stale temporaries aside; the top-level directories named in ``subdirs`` are
    checked by their own owners). Anything else is a one-line :class:`OutputError`: a
    directory holding a file ttforge did not write is never replaced. Returns
    ``files_of``'s mapping (``{}`` for a new or empty ``out``)."""
    p = Path(out)
    if not p.is_dir():
        return {}
    try:
        present = _entries(p, subdirs)
    except OSError as e:
        raise _failure(e, f"{flag} {show_path(p)}: cannot be listed") from None
    if not present and not any((p / d).is_dir() for d in subdirs):
        return {}
    where = f"{flag} {show_path(p)}"
    hint = "move it away or choose an empty or new directory"
    manifest = read_marker(p / marker, limit)
    files = None
    if isinstance(manifest, dict) and manifest.get("format") == fmt:
        try:
            files = dict(files_of(manifest))
        except (TypeError, ValueError, KeyError, AttributeError):
            files = None
    if files is None:
        # an older ttforge's output (its marker without today's fields) reads the same way
        raise OutputError(f"{where} is not empty and not a {command} output (no valid {marker}: another "
                          f"tool's, or one an older ttforge wrote); {hint}")
    for q in present:
        rel = q.relative_to(p).as_posix()
        if rel == marker:
            continue
        if rel not in files or not q.is_file() or q.is_symlink():
            raise OutputError(f"{where} is not empty: it holds {show_path(rel)}, which {command} did "
                              f"not write; {hint}")
        want = files[rel]
        if want is not None and sha256_file(q) not in ({want} if isinstance(want, str) else set(want)):
            raise OutputError(f"{where}: {show_path(rel)} was changed after {command} wrote it; "
                              f"{hint}")
    return files


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read anew on each call (the host may change it).

    Read from ``/proc/self/status`` where the kernel gives it (Linux 4.7+): ``os.umask``
    can only read it by setting it, and while it was 0 a file another thread of the host
    created was world-writable. Elsewhere the set-and-put-back, under a lock so that at
    least this module's own calls cannot read each other's 0."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _through_link(path: str | os.PathLike) -> Path:
    """``path``, or where it leads if it is a symbolic link: an output named through
    the user's link replaces the file or directory the link names and keeps the link
    (a rename over the link itself would swap the user's link for a new file, and a
    directory moved aside as a link was never deleted)."""
    if not os.path.islink(path):
        return Path(path)
    real = os.path.realpath(path)
    if os.path.islink(real):   # a loop: realpath gives up on a link
        raise OutputError(f"{show_path(path)} is a symbolic link that leads to no file (a loop of links); "
                          f"remove it or choose another output path")
    return Path(real)


#: The staging directories of :func:`replace_dir` and :func:`atomic_dir` being filled in
#: this process (absolute path -> the output each replaces), so that an error naming a
#: file inside one names the output's file (:func:`_output_name`).
_staged: dict[str, Path] = {}


@contextlib.contextmanager
def _staging_as(tmp: Path, out: Path) -> Iterator[None]:
    """While the block runs, a path inside the staging directory ``tmp`` is shown as the
    same path inside ``out`` (:func:`_output_name`)."""
    key = os.path.abspath(tmp)
    _staged[key] = out
    try:
        yield
    finally:
        _staged.pop(key, None)


def _output_name(path: str | os.PathLike) -> str:
    """``path`` as the user knows it: one inside a staging directory of
    :func:`replace_dir` or :func:`atomic_dir` (``.run.ttforge-<pid>.<random>.tmp/metrics.png``,
    gone when the line is read) is the same path inside that output (``run/metrics.png``)."""
    text = os.fsdecode(path)
    if not _staged:
        return text
    full = Path(os.path.abspath(text))
    for top in (full, *full.parents):
        out = _staged.get(str(top))
        if out is not None:
            return str(out / full.relative_to(top)) if full != top else str(out)
    return text


def _name_output(e: BaseException, path: str | os.PathLike, tmp: str | os.PathLike | None = None, *,
                 unnamed: bool = True) -> None:
    """Name the output in an :class:`OSError` raised while it was written: one that names
    the temporary ``tmp`` or a file in it names ``path`` or the file's place there (a full
    disk in a flow stage named ``.train.ttforge-<pid>.<random>.tmp/metrics.png``, a name the
    user never gave and that is gone when the line is read), also through the staging
    directories of enclosing writes (:func:`_output_name`). With ``unnamed`` (a file's
    write: all its block does is write it), one that names no file (``write`` on a full
    disk says only "No space left on device") names ``path``; a directory's block does
    other work too (a flow stage simulating in ``$TMPDIR``), whose errors keep their own
    text rather than the directory's name."""
    if not isinstance(e, OSError) or isinstance(e, BrokenPipeError):
        return
    if e.filename is None:
        if unnamed:
            e.filename = _output_name(path)
        return
    for attr in ("filename", "filename2"):
        named = getattr(e, attr, None)
        if not isinstance(named, (str, bytes, os.PathLike)):
            continue
        shown = Path(os.path.abspath(os.fsdecode(named)))
        if tmp is not None and shown == Path(os.path.abspath(tmp)):
            setattr(e, attr, _output_name(path))
        elif tmp is not None and shown.is_relative_to(os.path.abspath(tmp)):
            setattr(e, attr, _output_name(Path(path) / shown.relative_to(os.path.abspath(tmp))))
        else:
            mapped = _output_name(named)
            if mapped != os.fsdecode(named):
                setattr(e, attr, mapped)


def _fail(path: Path, e: OSError) -> OutputError:
    return _failure(e, f"cannot write {_output_name(path)}", path=path)


def _failure(e: OSError, what: str, fix: str = "choose another output path", *,
             path: str | os.PathLike | None = None) -> OutputError:
    """The one-line error of ``e``, which stopped ``what`` (``cannot write run/last.pt``).

    Whose it is, and the fix, come from the errno table of the command boundary
    (:func:`ttforge.boundary.describe_os_error`): the user's (a permission, a read-only
    file system, a path that cannot be a file) is ``what (why); fix``, exit 2; the
    machine's (a full disk or one out of inodes, a file-size or open-files limit, an I/O
    error) is ``what: why (...; its own fix)``, exit 3: "choose another output path" was
    the wrong fix for ``ulimit -n`` and a full disk was exit 2 when out of inodes. Either
    is an :class:`OutputError`, so that code handling an output it cannot write (a cache
    whose write only costs time) handles both; the machine's is its subclass
    :class:`~ttforge.errors.OutputFailure`, an environment failure."""
    from ttforge.boundary import describe_os_error

    why = e.strerror or str(e) or type(e).__name__
    # the same error naming no file: the line names the output, not the file the call named
    try:
        bare = type(e)(why) if e.errno is None else type(e)(e.errno, why)
    except TypeError:   # a subclass of other arguments
        bare = OSError(e.errno, why)
    line, code = describe_os_error(bare, path=path)   # a full disk names its file system
    if code == EXIT_USER:
        return OutputError(f"{what} ({why}); {fix}")
    return OutputFailure(f"{what}: {line}")


def _check_not_dir_name(path: str | os.PathLike, flag: str = "", example: str = "out") -> None:
    """One line if ``path`` ends in a separator: a directory's name, which ``Path`` drops
    (``out.bin/`` wrote a file ``out.bin``; ``cp`` says "Not a directory")."""
    text = os.fspath(path)
    if isinstance(text, str) and text.endswith(tuple(filter(None, (os.sep, os.altsep)))) and text.strip(os.sep):
        where = f"{flag} {show_path(text)}" if flag else show_path(text)
        raise OutputError(f"{where} ends in {text[-1]!r}, a directory's name, where a file is written; "
                          f"give the file's path (e.g. {show_path(text.rstrip(text[-1]))} or "
                          f"{show_path(text + example)})")


def check_output_file(path: str | os.PathLike, flag: str = "-o", example: str = "out") -> Path:
    """``path`` as a :class:`Path` if a file can be written there, else one-line error.

    Called before long work so a bad output path fails at once, not after it. Checks
    what can be checked without writing: the target is not a directory and no existing
    ancestor is a file. (Permissions show when the file is written.)
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputError(f"{flag} {p} is a directory; give a file name (e.g. {p}/{example})")
    _check_regular(p, flag)
    _check_ancestors(p, flag)
    check_not_input(p, flag)
    # after the checks of what is there: "/dev/null/" is a device, an input's path with
    # a "/" the input, whose fixes come first
    _check_not_dir_name(path, flag, example)
    return p



def check_writable(path: str | os.PathLike, flag: str = "-o", *, inside: bool = False) -> None:
    """One line unless a file can be created where ``path`` will be written: in its
    parent (``inside``: in the directory ``path`` itself), or (a parent the write
    creates, as every ttforge output) in the nearest existing ancestor, tried by
    creating and removing a temporary there. Called before any work (``train-board``'s
    output, ``regress``'s build cache), so a read-only directory never costs a long
    run at its end, nor fails each of its cases."""
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    where = target if inside else target.parent if str(target.parent) else Path(".")
    while not os.path.lexists(where) and where != where.parent:
        where = where.parent
    if not os.path.isdir(where):
        raise OutputError(f"{flag} {show_path(path)}: {show_path(where)} is not a directory; choose "
                          "another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=".tmp", dir=where)
    except OSError as e:
        raise _failure(e, f"{flag} {show_path(path)} cannot be written: creating a file in {show_path(where)} "
                          f"fails", "choose a writable directory", path=where) from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _check_regular(p: Path, flag: str = "") -> None:
    """Outputs go only to a regular file or a new path."""
    try:
        mode = os.stat(p).st_mode
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = file_kind(mode)
    where = f"{flag} {show_path(p)}" if flag else show_path(p)
    raise OutputError(f"{where} is {kind}; ttforge writes only to a regular file or a new path; "
                      f"choose another output path")


def check_output_dir(path: str | os.PathLike, flag: str = "-o") -> Path:
    """``path`` as a :class:`Path` if a directory can be created or used there."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p} exists and is not a directory; choose another output path")
    _check_ancestors(p, flag)
    check_not_input(p, flag)
    return p


def make_output_dir(path: str | os.PathLike, flag: str = "-o") -> Path:
    """:func:`check_output_dir`, then create the directory (and its parents); a
    directory that cannot be created is a one-line :class:`OutputError`."""
    p = check_output_dir(path, flag)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _failure(e, f"{flag} {p}: cannot create it", path=p) from None
    return p


def _check_ancestors(p: Path, flag: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                where = f"{flag} {p}" if flag else f"cannot write {p}"
                raise OutputError(f"{where}: {parent} is a file, not a directory; "
                                  f"choose another output path")
            return


def missing_dirs(path: str | os.PathLike) -> list[Path]:
    """The directories creating ``path`` (and its parents) would make, deepest first:
    what :func:`remove_made_dirs` takes back when the work that made them fails."""
    made, d = [], Path(path)
    while not os.path.lexists(d) and d != d.parent:
        made.append(d)
        d = d.parent
    return made


def _mkdir(parent: Path, path: Path) -> list[Path]:
    """Create ``parent`` (for the output ``path``); returns the directories it made,
    deepest first (:func:`remove_made_dirs` takes them back when the write fails)."""
    _check_ancestors(path, "")
    made = missing_dirs(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_made_dirs(made)
        raise _fail(path, e) from None
    return made


@contextlib.contextmanager
def names_file(path: str | os.PathLike) -> Iterator[None]:
    """An :class:`OSError` of the block that names no file names ``path``, the file the
    block writes: a write on a full disk says only "No space left on device"
    (``Path.write_text``, ``np.savez``'s close), and the line named nothing, or the
    directory an enclosing output was going to (a flow's ``sim/``, on a disk with space)
    instead of the ``$TMPDIR`` or cache that was full."""
    try:
        yield
    except OSError as e:
        if e.filename is None and not isinstance(e, BrokenPipeError):
            e.filename = os.fspath(path)
        raise


def remove_made_dirs(made: Iterable[Path]) -> None:
    """Remove the directories a failed write made, deepest first, while they are empty
    (a full disk left ``train --out``'s new directory behind, empty)."""
    for d in made:
        try:
            os.rmdir(d)
        except OSError:
            return


def remove_unused_dirs(made: Sequence[Path], *markers: str) -> None:
    """Take back the directories a command made (:func:`missing_dirs` before it, deepest
    first) when it wrote nothing into the deepest but ``markers`` (the claim of
    :func:`claim_work_dir`, :data:`WORK_MARKER`): a run that failed before its work left a
    new output directory holding only its claim."""
    if made:
        with contextlib.suppress(OSError):
            names = os.listdir(made[0])
            if set(names) <= set(markers):
                for name in names:
                    os.unlink(Path(made[0]) / name)
    remove_made_dirs(made)


def discard_dir(path: str | os.PathLike) -> None:
    """Delete the directory ``path`` (a link is not followed) as one rename: it moves to
    a temporary name first, which :func:`clean_stale` removes if this process dies
    while deleting it, so an interruption leaves it whole or gone, never half of it. A
    directory that holds an input of the running command is refused."""
    out = Path(path)
    check_not_input(out, "", tree=True)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=parent))
        os.rmdir(tmp)   # a unique name of ttforge's form, free for the rename
        os.replace(out, tmp)
    except OSError as e:
        raise _fail(out, e) from None
    shutil.rmtree(tmp, ignore_errors=True)


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name (e.g. {path}/out)")
    _check_regular(path)
    check_not_input(path, "")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        raise _fail(path, e) from None


def _unlink(tmp: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = file_path(path)
    _check_not_dir_name(path)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block ends.

    For libraries that write by file name (``torch.save``, ``savefig``, ``np.save``,
    ``onnx.save``): write to the yielded path. On success it is flushed and renamed
    over ``path``; on any exception it is removed and ``path`` is left as it was.
    ``suffix`` keeps the extension a library may insist on (e.g. ``".npy"``).
    """
    raw = path = file_path(path)
    path = _through_link(path)
    if _own_temporary(path):
        # a writer given the temporary of an enclosing block (train-int's saves): the
        # enclosing block renames it, and a temporary of the temporary, killed, was
        # named for no target that is ever cleaned and stayed for good
        yield path
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name (e.g. {path}/out)")
    _check_regular(path)
    check_not_input(path, "")
    _check_not_dir_name(raw)
    made = _mkdir(parent, path)
    clean_stale(parent, path.name)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(dir=parent, prefix=temp_prefix(path.name), suffix=suffix)
        tmp = Path(name)
        os.close(fd)
    except OSError as e:
        if tmp is not None:
            _unlink(tmp)
        remove_made_dirs(made)
        raise _fail(path, e) from None
    try:
        yield tmp
        _fsync_file(tmp)
        _replace(tmp, path)
    except BaseException as e:
        _unlink(tmp)
        remove_made_dirs(made)
        _name_output(e, path, tmp)
        raise


def _own_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary that :func:`atomic_path` of this process made
    (``.<name>.ttforge-<pid>.<random><suffix>``) and that still exists."""
    head, sep, _ = path.name.partition(f".{_TAG}{os.getpid()}.")
    return bool(sep) and head.startswith(".") and len(head) > 1 and path.is_file() and not path.is_symlink()


def staging_dir(path: str | os.PathLike) -> Path:
    """A new, empty temporary directory next to ``path`` (for :func:`commit_dir`), named
    so that :func:`clean_stale` removes it once this process is gone."""
    out = _through_link(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{show_path(out)} exists and is not a directory; choose another output path")
    parent = out.parent if str(out.parent) else Path(".")
    made = _mkdir(parent, out)
    clean_stale(parent, out.name)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp creates 0700; give the usual mode
    except OSError as e:
        remove_made_dirs(made)
        raise _fail(out, e) from None
    return tmp


def commit_dir(tmp: str | os.PathLike, path: str | os.PathLike, *, keep: Iterable[str] = ()) -> Path:
    """Replace the directory ``path`` by the filled staging directory ``tmp`` in one
    rename (the old one is moved aside first and deleted once the new one is in place).
    The entries of the old ``path`` named in ``keep`` (top-level names) move into the
    new one first, so files the caller did not write survive the replacement."""
    tmp, out = Path(tmp), _through_link(path)
    parent = out.parent if str(out.parent) else Path(".")
    keep = list(keep)
    old = None
    try:
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                _fsync_file(f)
        if out.exists():
            check_not_input(out, "", tree=True, spare=keep)
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".old", dir=parent))
            os.rmdir(old)
            for name in keep:
                src, dst = out / name, tmp / name
                if not os.path.lexists(src) or os.path.lexists(dst):
                    continue
                if src.is_dir() and not src.is_symlink():
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    shutil.copy2(src, dst, follow_symlinks=False)
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)
        if isinstance(e, OSError):
            raise _fail(out, e) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` (not followed) is the file open as ``fd``."""
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


#: The locks this process holds: lock file -> [descriptor, holds of output_lock, claims
#: of claim_work_dir]; the file goes when the last hold ends.
_held: dict[str, list[int]] = {}
#: The locks claimed by :func:`claim_work_dir` in the running command
#: (:func:`command_inputs`), released when it ends; ``None`` outside a command.
_claims: list[str] | None = None


#: The lock file inside a directory whose parent takes no new file (:func:`_lock_files`);
#: the checks of a directory's entries pass over it (a hidden name holding ``ttforge-``).
INSIDE_LOCK = f".{_TAG}lock"


def _lock_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """The lock files of the directory ``path``: ``.NAME.ttforge-lock`` beside the
    directory it names once links are followed (``--out L`` of a link ``L -> D`` and
    ``--out D`` took two locks and both wrote ``D``), and :data:`INSIDE_LOCK` inside it,
    the lock when its parent takes no new file (``--out .`` in a writable directory of a
    read-only one, a volume mounted on a root-owned mount point: refused as "cannot
    write ." when the lock went beside only)."""
    real = Path(os.path.realpath(Path(path).expanduser()))
    return real.parent / f".{real.name}.{_TAG}lock", real / INSIDE_LOCK


def _make_and_take(path: Path, flag: str, *, claim: bool) -> tuple[list[Path], str | None]:
    """The missing parents of ``path`` made (:func:`_make_parent`) and its lock held
    (:func:`_take`): ``(made, key)``; the parents go again if the lock is refused."""
    made = _make_parent(path, flag)
    try:
        return made, _take(path, flag, claim=claim)
    except BaseException:
        remove_made_dirs(made)
        raise


def _take(path: Path, flag: str, *, claim: bool) -> str | None:
    """Hold the lock of the directory ``path`` (:func:`_lock_files`; its parent exists)
    for this process; returns its key for :func:`_release`. A lock another process holds
    is a one-line :class:`OutputError`; so is one an :func:`output_lock` of this process
    holds, unless ``claim`` (the run claiming its own output, ``regress --out``: ``None``,
    the claim ends with that lock), and :func:`output_lock` shares a lock this process's
    claim holds."""
    import errno
    import fcntl

    beside, inside = _lock_files(path)
    busy = OutputError(f"{flag} {show_path(path)} is being written by another ttforge run; wait for it "
                       f"to end or choose another {flag}")
    key = str(inside) if str(inside) in _held else str(beside)
    held = _held.get(key)
    if held is not None:
        if held[1] and not claim:   # a second output_lock: another run, as seen from here
            raise busy
        if held[1] and claim:
            # held for the run by its output_lock, which ends with the run: a claim of
            # its own kept the lock file, and a new parent, after the lock took it back
            return None
        held[2 if claim else 1] += 1
        return key
    lock = beside
    for _attempt in range(9):   # 8 takes, and the move inside
        try:
            # not through a link of that name: the lock is this file, never one elsewhere
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~current_umask())
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise _fail(path, e) from None   # ELOOP: a link of the lock's name, never followed
            if lock == beside and inside.parent.is_dir():
                # the parent takes no file but the directory exists: every run into it
                # fails here the same way and meets at the lock inside it
                lock = inside
                continue
            why = e.strerror or str(e) or type(e).__name__
            raise OutputError(f"{flag} {show_path(path)}: cannot create its lock file in "
                              f"{show_path(lock.parent)} ({why}); choose another output path") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if not isinstance(e, BlockingIOError):
                raise _fail(path, e) from None
            raise busy from None
        # a run that ended between our open and our lock removed the file we hold: the
        # lock is the file now under that name (a third run may hold it), so take it anew
        if _same_file(fd, lock):
            break
        os.close(fd)
    else:
        raise OutputError(f"{flag} {show_path(path)}: its lock {lock.name} keeps changing (other ttforge "
                          f"runs start and end there); try again")
    key = str(lock)
    if not _held:
        _register_exit()
    _held[key] = [fd, 0 if claim else 1, 1 if claim else 0]
    return key


def _release(key: str | None, *, claim: bool) -> None:
    """End one hold of the lock ``key`` (:func:`_take`); the last removes the file."""
    held = _held.get(key) if key is not None else None
    if held is None:
        return
    held[2 if claim else 1] -= 1
    if held[1] > 0 or held[2] > 0:
        return
    del _held[key]
    _drop_lock(key, held[0])


def _drop_lock(key: str, fd: int) -> None:
    """Remove the lock file ``key`` (if it is still the file open as ``fd``) and close
    ``fd``: removed while still held, a run that opened it meanwhile finds the lock taken
    or, after this, a new file of its own."""
    if _same_file(fd, Path(key)):
        with contextlib.suppress(OSError):
            os.unlink(key)
    with contextlib.suppress(OSError):
        os.close(fd)


_exit_registered: list[int] = []


def _register_exit() -> None:
    """Release this process's locks at exit (claims made outside a command): the lock
    files go with it. A child forked with them (inheriting the descriptors) leaves them."""
    import atexit

    if _exit_registered:
        return
    _exit_registered.append(os.getpid())

    def release_all() -> None:
        if os.getpid() != _exit_registered[0]:
            return
        for key, (fd, _outs, _claims_) in list(_held.items()):
            del _held[key]
            _drop_lock(key, fd)

    atexit.register(release_all)


def _make_parent(path: Path, flag: str) -> list[Path]:
    """Create the parent of the directory ``path`` (links followed, where its lock goes);
    returns the directories made, deepest first, for :func:`remove_made_dirs`. A path reached
    through a link to a missing directory is refused (following it made the link's
    target, a drive not mounted, on the disk under it)."""
    where = f"{flag} {show_path(path)}"
    dangling = broken_link(path, where, "directory")
    if dangling:
        raise OutputError(dangling)
    parent = _lock_files(path)[0].parent
    _check_ancestors(path, flag)
    made = missing_dirs(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_made_dirs(made)
        raise _failure(e, f"{flag} {show_path(path)}: cannot create {show_path(parent)}", path=parent) from None
    return made


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, flag: str = "--out") -> Iterator[None]:
    """Hold the output directory ``path`` for the block: another ttforge run into it is
    refused in one line until the block ends (two runs started together each found it
    empty or their own, and wrote over each other's files, a run's checkpoint from one
    seed beside the metrics of another). The lock is a hidden file beside the directory
    ``path`` names once links are followed (``.NAME.ttforge-lock``), removed when the
    block ends. Parents of ``path`` that do not exist are created first (without them
    nothing was held: ``--out new/run`` and every default output in a fresh directory);
    they, and ``path`` if the block made it and fails leaving it empty (or holding only
    :data:`WORK_MARKER`), are taken back after the block. A run refused here takes back
    nothing but the parents it made that are still empty (it took the running run's new
    directory away)."""
    p = Path(path).expanduser()
    made, key = _make_and_take(p, flag, claim=False)
    real = Path(os.path.realpath(p))
    new = not os.path.lexists(real)   # judged under the lock: no other run makes it now
    try:
        try:
            yield
        except BaseException:
            if new:
                remove_unused_dirs([real], WORK_MARKER)
            raise
    finally:
        _release(key, claim=False)
        remove_made_dirs(made)


@contextlib.contextmanager
def cache_lock(path: str | os.PathLike, what: str = "the build cache") -> Iterator[None]:
    """Hold the lock file ``path`` (made if missing) for the block, waiting while another
    process holds it: one build of a key at a time in a shared cache. Never through a
    link and never truncating (``open(path, "w")`` emptied the file a link of that name
    pointed to); a link or anything but a regular file there is a one-line
    :class:`OutputError` naming ``what``."""
    import errno
    import fcntl

    p = Path(path)
    try:
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o666 & ~current_umask())
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{what}: {show_path(p)} is a symbolic link, not ttforge's lock file; remove "
                              f"it (or choose another cache directory)") from None
        raise _fail(p, e) from None
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise OutputError(f"{what}: {show_path(p)} is {kind}, not ttforge's lock file; remove it (or "
                              f"choose another cache directory)")
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_run_dir(out: str | os.PathLike, files: Iterable[str], flag: str, *, replace: bool,
                  resume_hint: str) -> None:
    """A one-line :class:`~ttforge.errors.ConfigError` unless the run directory ``out``
    may take a run's ``files`` (its state first, then the files written beside it):
    it holds none of them, or ``replace`` (``--overwrite``, or the state is the one
    resumed). Another run's state and files of those names without a state (not a
    ttforge run) are never replaced silently; ``resume_hint`` says how to continue the
    run found (``"pass --resume to continue it, "``)."""
    out = Path(out)
    state, *beside = files
    if replace:
        return
    if (out / state).exists():
        raise ConfigError(f"{flag} {out} already holds a run ({state}); {resume_hint}pass --overwrite to "
                          f"replace it, or choose another {flag}")
    theirs = [n for n in beside if (out / n).exists()]
    if theirs:
        raise ConfigError(f"{flag} {out} holds {theirs[0]} but no {state} (not a ttforge run); "
                          f"choose another {flag}, or pass --overwrite to replace it")


def check_run_files(out: str | os.PathLike, files: Iterable[str], flag: str) -> None:
    """A one-line :class:`~ttforge.errors.OutputError` if one of a run's ``files`` in
    ``out`` is something it cannot be replaced by a file (a directory, a FIFO, a device,
    a socket), before any step.

    The names are the run's own: found only when an epoch's files were renamed into
    place, such an entry failed after an epoch of work (``train --resume`` had rewritten
    ``last.pt`` and ``metrics.json`` by then), advising a file name the user cannot give.
    """
    out = Path(out)
    for name in files:
        try:
            mode = os.stat(out / name).st_mode
        except (OSError, ValueError):
            continue   # absent (or a dangling link): a new path
        if not stat.S_ISREG(mode):
            raise OutputError(f"{flag} {show_path(out)}: {show_path(out / name)} is {file_kind(mode)} where "
                              f"the run writes its {name}; remove or move it, or choose another {flag}")


def claim_work_dir(path: str | os.PathLike, flag: str = "--keep") -> Path:
    """A directory ttforge may fill with work files (``--keep DIR``): a new or empty one,
    or one it claimed before (it holds :data:`WORK_MARKER`). A directory holding the
    user's files is refused (work files such as ``build/`` or ``core.v`` would overwrite
    theirs). Creates it and the marker.

    The directory is held (its lock, as :func:`output_lock`'s) until the running command
    ends (:func:`command_inputs`; outside one, until the process ends): another run
    claiming it meanwhile is refused in one line (two ``build --keep K`` both wrote
    ``K/build/``, one's bitstream in the other's output). Claiming it again in the same
    command, or a directory its :func:`output_lock` holds, is not refused.
    """
    p = check_output_dir(path, flag)
    made, key = _make_and_take(p, flag, claim=True)
    try:
        if p.is_dir() and not (p / WORK_MARKER).is_file():
            try:
                first = next(iter(sorted(set(os.listdir(p)) - {INSIDE_LOCK})), None)
            except OSError as e:
                raise _failure(e, f"{flag} {show_path(p)}: cannot be listed", "check its permissions") from None
            if first is not None:
                raise OutputError(f"{flag} {show_path(p)} is not empty (it holds {show_path(first)}) and not "
                                  f"a ttforge work directory (no {WORK_MARKER}: the user's, or made by a "
                                  f"ttforge older than that marker); its files could be overwritten: give a "
                                  f"new or empty directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
            if not (p / WORK_MARKER).is_file():
                (p / WORK_MARKER).write_text(_WORK_TEXT)
        except OSError as e:
            raise _fail(p, e) from None
    except BaseException:
        if key is not None:
            _release(key, claim=True)
        remove_made_dirs(made)
        raise
    if _claims is not None and key is not None:
        _claims.append(key)
    return p


_WORK_TEXT = "work files of ttforge; this directory may be overwritten by it\n"


def reclaim_work_dir(path: str | os.PathLike, own: Callable[[str], bool]) -> None:
    """Mark the directory ``path`` a run claimed (:func:`claim_work_dir`) as ttforge's
    again when its :data:`WORK_MARKER` is gone and every entry is one the run writes
    (``own(name)``; ttforge's temporaries aside): removed during the run, it was made
    again by the run's writes without the marker, and every later run refused it as
    "not a ttforge work directory". A directory holding anything else is left as it is."""
    p = Path(path)
    if (p / WORK_MARKER).is_file():
        return
    try:
        names = os.listdir(p)
    except OSError:
        return   # gone (nothing written since) or unreadable: nothing to mark
    if all(own(n) or (n.startswith(".") and _TAG in n) for n in names):
        atomic_write_text(p / WORK_MARKER, _WORK_TEXT)


def replace_dir(path: str | os.PathLike, fill: Callable[[Path], object], *, own: Iterable[str]):
    """Run ``fill(staging)`` on a new directory beside ``path``, then replace ``path`` by
    it in one rename: ``path`` is the complete new result or, after any error or an
    interruption (Ctrl-C, SIGTERM), the old one, whole. Top-level entries of the old
    ``path`` that are not in ``own`` (the names ``fill`` writes) are not the caller's and
    move into the new directory. Returns what ``fill`` returned."""
    out = Path(path)
    tmp = staging_dir(out)
    try:
        with _staging_as(tmp, out):
            result = fill(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _name_output(e, out, tmp, unnamed=False)
        raise
    own = set(own)
    try:
        keep = [e.name for e in os.scandir(out) if e.name not in own
                and not (e.name.startswith(".") and _TAG in e.name)] if out.is_dir() else []
    except OSError:
        keep = []
    commit_dir(tmp, out, keep=keep)
    return result


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, owner: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A temporary directory next to ``path`` that replaces ``path`` when the block ends.

    Fill the yielded directory; on success it is renamed to ``path`` (an existing
    ``path`` is replaced: moved aside, then deleted once the new one is in place). On
    any exception the temporary directory is deleted and ``path`` is left as it was.
    ``owner(path)`` (e.g. a :func:`check_owned_dir`), called before the block and again
    before the rename, raises if an existing ``path`` may not be replaced; a directory
    that holds an input of the running command is never replaced.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory; choose another output path")
    check_not_input(out, "", tree=True)
    if owner is not None:
        owner(out)
    tmp = staging_dir(out)
    try:
        with _staging_as(tmp, out):
            yield tmp
            if owner is not None:
                owner(out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _name_output(e, out, tmp, unnamed=False)
        raise
    commit_dir(tmp, out)


def write_files_atomically(out: str | os.PathLike, files: Mapping[str, bytes], *,
                           owner: Callable[[Path], None] | None = None) -> Path:
    """Replace the directory ``out`` by one holding exactly ``files`` (name -> bytes);
    ``owner`` as in :func:`atomic_dir`."""
    out = Path(out)
    with atomic_dir(out, owner=owner) as tmp:
        for name, data in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
    return out
