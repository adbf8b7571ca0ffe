"""Reading input files and writing outputs: one place for each rule.

Reading: `read_bytes` (a clear error for a missing or unreadable file), `decode_json` (msgspec into a typed
schema; malformed JSON, a wrong encoding or a record of the wrong type becomes a `DataError` naming the line
or the record), `check_unique_ids`, and `gc_paused` for VQAv2-sized files.

Writing: every output a user keeps appears atomically through `atomic_path` (written under a temporary
sibling name, then renamed into place), so a crash or a full disk never leaves a half-written file or
directory under the final name. Files and directories get the modes the umask gives (not mkstemp's 0600:
colleagues on a shared cluster must be able to read checkpoints). A failed write is a `WriteError` that
names the path and the cause (no space left, read-only filesystem, permission).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import re
import resource
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import yaml

from sit_vqa.errors import DataError, WriteError

# ------------------------------------------------------------------------------------------------- reading


def read_bytes(path: str | Path, what: str) -> bytes:
    """Read a whole input file, with a clear error when it is missing or unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory; pass the JSON file inside it") from None
    except OSError as error:
        raise DataError(f"cannot read {what} {path}: {error.strerror}") from None


def decode_json(path: str | Path, schema: type, expected: str, data: bytes | None = None, *,
                kind: str | None = None, wrong_file_note: str = ""):
    """`path` decoded into `schema` (msgspec); any failure is a DataError saying where and what `expected` is.

    kind: the `describe_json_shape` kind of the right file. A file that fails validation and is recognisably of
    another kind (a GQA file where a SQuAD one belongs) is named as such, "this looks like ..., not <expected>",
    followed by `wrong_file_note`, instead of the field that failed."""
    path = Path(path)
    data = read_bytes(path, expected) if data is None else data
    try:
        return msgspec.json.decode(data, type=schema)
    except msgspec.ValidationError as error:
        hint = wrong_file_hint(data, kind, expected) if kind else None
        raise (DataError(f"{path}: {hint}{wrong_file_note}") if hint else
               json_error(path, data, error, expected)) from None
    except msgspec.MsgspecError as error:
        raise json_error(path, data, error, expected) from None
    except UnicodeDecodeError:
        raise encoding_error(path, data, expected) from None


@contextlib.contextmanager
def gc_paused():
    """Reading VQAv2-sized JSON makes millions of small containers, none in a cycle; each run of the cyclic
    garbage collector walks them all (it doubled the joiner's annotations read and cost 0.3-0.5 s of the
    2.5 s the scorer takes on VQAv2 val)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_INT64 = np.iinfo(np.int64)


def int64_ids(path: Path, json_key: str, values: list[int], field: str) -> np.ndarray:
    """`values` (the `field` of every `$.<json_key>[*]`) as an int64 array; a DataError naming the first record
    whose id does not fit (the official files' ids all do; Arrow tables and the join need int64)."""
    for index, value in enumerate(values):
        if not _INT64.min <= value <= _INT64.max:
            raise DataError(
                f"{path}: $.{json_key}[{index}].{field} is {value}, beyond the 64-bit integer range "
                f"({_INT64.min}..{_INT64.max}) that ids must fit; fix that record or use the official file"
            )
    return np.array(values, dtype=np.int64)


def check_unique_ids(path: Path, json_key: str, ids: np.ndarray, field: str) -> None:
    """Raise a DataError naming up to 5 repeated values of `$.<json_key>[*].<field>` and where they are."""
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) == len(ids):
        return
    duplicates = unique[counts > 1]
    shown = []
    for duplicate in duplicates[:5].tolist():
        where = np.flatnonzero(ids == duplicate)[:3].tolist()
        shown.append(f"{field} {duplicate} at " + ", ".join(f"$.{json_key}[{i}]" for i in where))
    name = field.replace("_", " ")
    raise DataError(
        f"{path}: {len(duplicates)} duplicate {name}(s) in $.{json_key}: " + "; ".join(shown)
        + f". Each {name} must be unique; the file is corrupt or two files were concatenated."
    )


_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")
_JSON_PATH = re.compile(r"at `(\$[^`]*)`")
_EXCERPT_CHARS = 200


def json_error(path: Path, data: bytes, error: msgspec.MsgspecError, expected: str) -> DataError:
    """Turn a msgspec decode/validation error for `path` into a DataError that names the record.

    `expected` says what the file should be, e.g. "the VQAv2 questions file v2_OpenEnded_mscoco_<split>_questions.json".
    Malformed JSON gets a line and column; a type error gets msgspec's JSON path (`$.questions[12].image_id`)
    and an excerpt of the offending record.
    """
    message = str(error)
    if data.startswith(b"\xef\xbb\xbf"):
        return encoding_error(path, data, expected)
    if isinstance(error, msgspec.DecodeError) and not isinstance(error, msgspec.ValidationError):
        offset = _BYTE_OFFSET.search(message)
        where = ""
        if offset:
            byte = int(offset.group(1))
            line = data.count(b"\n", 0, byte) + 1
            column = byte - (data.rfind(b"\n", 0, byte) + 1) + 1
            where = f" at line {line}, column {column}"
        return DataError(
            f"{path}: not valid JSON{where}: {message}. Expected {expected}; re-download or regenerate the file."
        )
    record = _JSON_PATH.search(message)
    excerpt = _record_excerpt(data, record.group(1)) if record else None
    shown = f"\n  offending record: {excerpt}" if excerpt else ""
    return DataError(f"{path}: {message}.{shown}\n  Expected {expected}: fix that record or use the official file.")


def encoding_error(path: Path, data: bytes, expected: str) -> DataError:
    """A file that is not UTF-8 (JSON must be): name the byte where decoding fails and what is there."""
    if data.startswith(b"\xef\xbb\xbf"):
        return DataError(f"{path}: starts with a UTF-8 byte-order mark, which JSON does not allow; "
                         f"save it without the BOM. Expected {expected}.")
    try:
        data.decode("utf-8")
        where = ""
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        where = f" at byte {error.start} (line {line}): {data[error.start:error.start + 4]!r}"
    return DataError(f"{path}: not UTF-8 text{where}. Expected {expected}; re-encode the file as UTF-8 "
                     "or use the official file.")


def _record_excerpt(data: bytes, json_path: str) -> str | None:
    """The JSON text of the record `$.<key>[<index>]` that json_path points into (None if not of that shape)."""
    match = re.match(r"\$\.(\w+)\[(\d+)\]", json_path)
    if not match:
        return None
    key, index = match.group(1), int(match.group(2))
    try:
        records = msgspec.json.decode(data, type=dict[str, msgspec.Raw])[key]
        record = bytes(msgspec.json.decode(records, type=list[msgspec.Raw])[index])
    except (msgspec.MsgspecError, KeyError, IndexError):
        return None
    text = record.decode("utf-8", errors="replace")
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key written twice in one mapping is an error (PyYAML keeps the later value
    without a word, so an edited config would silently run with the other setting)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: merged keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    line = first_line.setdefault(key, key_node.start_mark.line)
                except TypeError:  # an unhashable key: construct_mapping below reports it
                    continue
                if line != key_node.start_mark.line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is written twice (first on line {line + 1}); keep one: the later "
                        "value would silently win", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str | Path) -> Any:
    """The YAML document in `text` (safe types only); a key written twice is a yaml.YAMLError whose message
    names `source`, the key and its line, as every other YAML error there does."""
    loader = _UniqueKeyLoader(text)
    loader.name = str(source)  # the marks in error messages name the file, not "<unicode string>"
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ------------------------------------------------------------------------------------ recognising a file


class FileShape(NamedTuple):
    """What kind of evaluation file a JSON document looks like: a short kind and a description for messages."""

    kind: str  # vqa_questions, vqa_annotations, coco, squad, gqa_questions, squad_predictions, gqa_predictions,
    # vqa_results, alpaca
    description: str


def describe_json_shape(data: bytes) -> FileShape | None:
    """Recognise the files this package reads by their top-level shape (and the keys of the first record), for
    errors when one file is passed where another is expected; None when the shape is none of them."""
    try:
        document = msgspec.json.decode(data)
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return None
    if isinstance(document, dict):
        return _describe_object(document)
    if isinstance(document, list) and document and isinstance(document[0], dict):
        return _describe_records(set(document[0]))
    return None


def _describe_object(document: dict) -> FileShape | None:
    if isinstance(document.get("questions"), list):
        return FileShape("vqa_questions", 'a VQAv2-style questions file ({"questions": [...]})')
    if isinstance(document.get("annotations"), list):
        if "images" in document:
            return FileShape("coco", 'a COCO annotations file ({"images": [...], "annotations": [...]})')
        return FileShape("vqa_annotations", 'a VQAv2-style annotations file ({"annotations": [...]})')
    if isinstance(document.get("data"), list):
        return FileShape("squad", 'a SQuAD-format file ({"version", "data": [{"title", "paragraphs"}]})')
    first = next(iter(document.values()), None)
    if isinstance(first, dict) and {"imageId", "question", "answer"} <= set(first):
        return FileShape(
            "gqa_questions", "a GQA questions file (an object keyed by question id, each with imageId, question, answer)"
        )
    if document and all(isinstance(value, str) for value in document.values()):
        return FileShape("squad_predictions", 'SQuAD-style predictions ({"<question id>": "<answer text>"})')
    return None


def _describe_records(keys: set) -> FileShape | None:
    if {"questionId", "prediction"} <= keys:
        return FileShape("gqa_predictions", 'GQA predictions ([{"questionId", "prediction"}, ...])')
    if {"question_id", "answer"} <= keys:
        return FileShape("vqa_results", 'VQAv2 results ([{"question_id", "answer"}, ...])')
    if {"instruction", "output"} <= keys:
        return FileShape("alpaca", "an Alpaca-format instruction file")
    return None


def wrong_file_hint(data: bytes, expected_kind: str, expected: str) -> str | None:
    """ "this looks like <what it is>, not <expected>" when the file is recognisably another kind of file."""
    shape = describe_json_shape(data)
    if shape is None or shape.kind == expected_kind:
        return None
    return f"this looks like {shape.description}, not {expected}"


def check_same_ids(reference: Path, other: Path, reference_ids, other_ids, what: str) -> None:
    """Raise a DataError when two files that must hold the same ids (a translation and its English original)
    do not: say how many ids each lacks, with examples."""
    reference_ids, other_ids = set(reference_ids), set(other_ids)
    if reference_ids == other_ids:
        return
    only_reference = sorted(reference_ids - other_ids, key=str)
    only_other = sorted(other_ids - reference_ids, key=str)
    parts = []
    if only_reference:
        parts.append(f"{len(only_reference)} of {reference.name} are missing from it (e.g. {_first(only_reference)})")
    if only_other:
        parts.append(f"{len(only_other)} are not in {reference.name} (e.g. {_first(only_other)})")
    raise DataError(
        f"{other}: its {what} differ from those of {reference}: " + "; ".join(parts)
        + f". A translated file must hold exactly the {what} of its English original; use the files of one "
        "release (and the same split)."
    )


def _first(ids: list, limit: int = 3) -> str:
    return ", ".join(map(str, ids[:limit])) + (", ..." if len(ids) > limit else "")


# ------------------------------------------------------------------------------------------------- writing

_WRITE_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than allowed (a file-size limit)",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
# Libraries that write through their own code report a full disk only in their message text:
# safetensors says "(os error 28)", shutil.copytree lists "[Errno 28] ..." per file; torch's zip writer says
# "unexpected pos ..." (it checks no errno: then the filesystem itself is asked, see `_cut_short_cause`).
_OS_ERROR_NUMBER = re.compile(r"(?:os error |\[Errno )(\d+)")
# what torch.save says when its write was cut short (a full disk or a file-size limit): no errno, only text
_TORCH_CUT_SHORT = ("unexpected pos", "PytorchStreamWriter failed", "basic_ios::clear")
_NEARLY_FULL_BYTES = 1 << 20


# what to do about each cause: more room for a full disk, another place (or the rights) for the others
_ROOM = "Free space or pick a location with room"
_WRITE_FIXES = {
    errno.ENOSPC: _ROOM,
    errno.EDQUOT: "Free space within your quota or pick a location with room",
    errno.EFBIG: "Raise the file-size limit (ulimit -f) or pick a location that allows the file",
    errno.EROFS: "Pick a location on a writable filesystem, or remount this one read-write",
    errno.EACCES: "Pick a location you may write to, or fix its permissions",
    errno.EPERM: "Pick a location you may write to, or fix its permissions",
    errno.ENOTDIR: "Move that file away or pick another path",
    errno.ENOENT: "Create the missing folder or pick a path whose folders exist",
    errno.EISDIR: "Pick a file name, not a folder",
    errno.ENAMETOOLONG: "Pick a shorter path",
}


def error_number(error: BaseException) -> int | None:
    """The errno of a failed write: the exception's own, else the one a library wrote only in its message
    ("(os error 28)", "[Errno 30] ...")."""
    number = getattr(error, "errno", None)
    if number is None and (match := _OS_ERROR_NUMBER.search(str(error))):
        number = int(match.group(1))
    return number


def write_cause(error: BaseException) -> str | None:
    """Why a write failed, in words, when `error` says it; None when it is not a write failure we know."""
    number = error_number(error)
    if number in _WRITE_CAUSES:
        return _WRITE_CAUSES[number]
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if _torch_cut_short(error):
        return "the write was cut short (most often: no space left on the device)"
    return None


def is_write_failure(error: BaseException) -> bool:
    """Whether `error` is a write that failed for one of the causes a user fixes (space, quota, file-size
    limit, read-only, permission), also when a library reports it only in its message."""
    return error_number(error) in _WRITE_CAUSES or _torch_cut_short(error)


def _torch_cut_short(error: BaseException) -> bool:
    return any(text in str(error) for text in _TORCH_CUT_SHORT)


def _cut_short_cause(path: Path) -> str | None:
    """Why a write that reported no errno was cut short: a (nearly) full filesystem, or a file-size limit."""
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is not None and shutil.disk_usage(existing).free < _NEARLY_FULL_BYTES:
        return _WRITE_CAUSES[errno.ENOSPC]
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return _WRITE_CAUSES[errno.EFBIG]
    return None


def write_error(path: str | Path, error: BaseException, hint: str = "") -> WriteError:
    """A WriteError naming `path`, the cause found (the errno, or what the filesystem says) and the fix for
    that cause; its `errno` is the cause's, for callers whose advice depends on it."""
    number = error_number(error)
    cause = write_cause(error) or str(error)
    if cause.startswith("the write was cut short"):
        cause = _cut_short_cause(Path(path)) or cause
        number = next((n for n, text in _WRITE_CAUSES.items() if text == cause), None)
    elif number in (errno.ENOTDIR, errno.ENOENT, errno.EEXIST):  # a folder that is a file, or is missing
        found = _path_cause(Path(os.fsdecode(getattr(error, "filename", None) or path)), number)
        cause, number = found or (cause, number)
    # no errno at all: a write cut short whose cause the filesystem did not tell, most often a full disk
    fix = _WRITE_FIXES.get(number) or (_ROOM if number is None else "Pick a writable location")
    made = WriteError(f"cannot write {path}: {cause}. {fix}{hint}.")
    made.errno = number
    return made


def _path_cause(path: Path, number: int) -> tuple[str, int] | None:
    """What in `path` is in the way, and its errno: a file that stands where a folder should be (ENOTDIR; the
    folder mkdir was asked for, when it says EEXIST), or the first folder that does not exist (ENOENT)."""
    folders = [*reversed(path.parents), *([path] if number == errno.EEXIST else [])]  # from the root down
    for folder in folders:
        if not folder.exists():
            return f"the folder {folder} does not exist", errno.ENOENT
        if not folder.is_dir():
            return f"{folder} is a file, not a folder", errno.ENOTDIR
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path, *, temporary: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write a file or directory to; on success it is renamed to `path` (an existing
    directory there is replaced), on failure removed. `temporary` defaults to a hidden sibling of `path`
    (same filesystem, so the rename is atomic). Write failures become a WriteError naming `path`."""
    path = Path(path)
    temporary = Path(temporary) if temporary else path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        temporary.parent.mkdir(parents=True, exist_ok=True)
        remove(temporary)  # what a killed earlier write left
        yield temporary
        _publish(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):  # e.g. a name too long even to look up: the error below says so
            remove(temporary)
        if isinstance(error, WriteError) and error.__cause__ is not None:  # a nested write: name what the user asked for
            raise write_error(path, error.__cause__) from error.__cause__
        if write_cause(error) is not None and not isinstance(error, WriteError):
            raise write_error(path, error) from error
        raise


def _publish(temporary: Path, path: Path) -> None:
    _follow_umask(temporary)
    if temporary.is_dir() and path.exists():  # os.replace cannot replace a non-empty directory
        previous = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.previous")
        os.rename(path, previous)
        os.rename(temporary, path)
        shutil.rmtree(previous)
    else:
        os.replace(temporary, path)


def _follow_umask(path: Path) -> None:
    """Give the files written under `path` the mode the umask allows (0o666 less the umask). safetensors (also
    inside save_pretrained) writes through a 0600 temp file of its own, which would leave checkpoints unreadable
    to colleagues on a shared cluster: https://github.com/safetensors/safetensors/issues/782."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    for file in [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()):
        if stat.S_IMODE(file.stat().st_mode) != mode:
            file.chmod(mode)


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text_atomically(path: str | Path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomically(path: str | Path, payload: Any) -> Path:
    return write_text_atomically(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def held_lock(path: str | Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold `path` (an flock, released by the kernel however the process ends, SIGKILL included) while the block
    runs: one writer at a time for a folder. Another process holding it raises busy(holder), where holder says
    which process ("process 1234"). The file is unlinked while still locked on the way out."""
    path = Path(path)
    handle = _lock(path, busy)
    try:
        yield
    finally:
        # unlinked while still locked: a process that opened the old file sees, once it holds the lock, that
        # the path names another file (or none) and opens it again
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()


def _lock(path: Path, busy: Callable[[str], Exception]):
    """The open, flock-ed lock file, holding this process's pid. The lock is taken on a read-only descriptor and
    the pid written through a second, closed at once (flock belongs to the descriptor that took it): the run
    keeps no file open for writing, so its directory can still be remounted read-only under it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(os.open(path, os.O_RDONLY | os.O_CREAT, 0o644), encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = handle.read().strip()
                handle.close()
                raise busy(f"process {holder}" if holder else "a process that is starting") from None
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                    break
            handle.close()  # the holder removed the file between our open and our lock: open the new one
        try:
            path.write_text(f"{os.getpid()}\n", encoding="utf-8")
        except OSError:
            handle.close()
            raise
        return handle
    except OSError as error:
        raise write_error(path, error) from error
