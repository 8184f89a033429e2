"""A folder of colorizations, owned through its manifest `.colorize.json`, written before the first image:
what made its colorizations (family, checkpoint, sampling) and every file a run writes there. So a
later run knows what it may replace: a run of the same weights updates its files; another model's run
into an --output folder it chose is refused (--overwrite replaces them); in folders of the run itself
(test mode's colorized/, colorize mode's default folder) the previous files are removed first, so none
is stale. A file that is an input, or that no colorize run wrote, is never overwritten without
--overwrite, and an input never at all.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from util import files


class OutputConflict(Exception):
    """Writing the colorizations would destroy or mix up files; the message says which and what to do."""



def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False



class OutputFolder:
    """A folder of colorizations and its manifest, `.colorize.json`."""

    MANIFEST = ".colorize.json"

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = self.path / self.MANIFEST

    def read(self) -> dict | None:
        """The manifest ({"maker": {...}, "files": [relative names]}), None when there is none or it
        is damaged; names that would leave the folder are dropped."""
        try:
            data = json.loads(self.manifest.read_text())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("maker"), dict) \
                or not isinstance(data.get("files"), list):
            return None
        listed = [f for f in data["files"] if isinstance(f, str) and f and not Path(f).is_absolute()
                  and ".." not in Path(f).parts]
        return {"maker": data["maker"], "files": listed}

    def own_files(self) -> list[Path]:
        """What colorize runs wrote here (and still exists), the manifest included; never a file
        outside the folder, whatever the manifest says."""
        saved = self.read()
        listed = [self.path / f for f in (saved or {}).get("files", [])] + [self.manifest]
        return [p for p in listed if (p.is_file() or p.is_symlink()) and _inside(p.parent, self.path)]

    def remove_own(self) -> int:
        """Remove the files colorize runs wrote here, and the folders of theirs that leaves empty."""
        gone = self.own_files()
        for p in gone:
            p.unlink(missing_ok=True)
        top = self.path.resolve()
        for folder in sorted({q for p in gone for q in p.resolve().parents if top in q.parents},
                             key=lambda q: len(q.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
        return len(gone)

    def _refuse_clashes(self, targets: list[Path], inputs: list[Path]) -> None:
        """OutputConflict when two outputs share a name, or an output is one of the inputs (any link to it)."""
        if len(set(targets)) != len(targets):
            twice = [str(t) for t, n in Counter(targets).items() if n > 1]
            raise OutputConflict(f"two outputs would have the same name in {self.path} ({', '.join(twice[:3])}): "
                                 f"rename one of the inputs")
        ids = {}
        for p in inputs:
            try:
                st = os.stat(p)
                ids[(st.st_dev, st.st_ino)] = p
            except OSError:
                pass
        for t in targets:
            try:
                st = os.stat(self.path / t)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in ids:
                raise OutputConflict(f"--output {self.path}: the colorization of {ids[(st.st_dev, st.st_ino)]} "
                                     f"would be written over an input ({self.path / t}); choose an --output "
                                     f"folder apart from the photos")

    def _previous(self, maker: dict, replace: bool, note) -> dict | None:
        """The manifest of the colorizations already here that this run keeps (same maker), or None
        after removing them (replace: a folder of the run itself, or --overwrite); OutputConflict when
        another maker's are here and may not be replaced."""
        saved = self.read()
        if saved is not None and (replace or saved["maker"] != maker):
            if not replace:
                raise OutputConflict(f"--output {self.path} holds colorizations by another model or setting "
                                     f"({describe(saved['maker'], maker)}); this run is {describe(maker)}. Use "
                                     f"another --output, or --overwrite to replace them")
            if saved["maker"] != maker:
                note(f"note: replacing the colorizations in {self.path} ({describe(saved['maker'], maker)})")
            self.remove_own()
            saved = None
        return saved

    def begin(self, maker: dict, targets: list[Path], inputs: list[Path], own: bool, overwrite: bool,
              note=print) -> None:
        """Check that writing `targets` (relative names) destroys nothing, then record them (and
        `maker`) in the manifest before any is written. `own`: a folder of the run itself, whose
        previous colorizations are removed first. Raises OutputConflict."""
        if not targets:  # nothing to write (test mode with --input ""): the previous files are not kept
            if own and self.read() is not None:
                self.remove_own()
            return
        self._refuse_clashes(targets, inputs)
        saved = self._previous(maker, own or overwrite, note)
        ours = set(saved["files"]) if saved else set()
        foreign = [t for t in targets if t.as_posix() not in ours and (self.path / t).exists()]
        if foreign and not (own or overwrite):
            raise OutputConflict(f"--output {self.path}: {len(foreign)} file(s) there would be overwritten and were "
                                 f"not written by a colorize run into it ({', '.join(map(str, foreign[:3]))}); "
                                 f"use another --output, or --overwrite to replace them")
        for t in targets + [Path(f) for f in ours]:  # what a write cut short by a kill left behind
            for stale in (self.path / t).parent.glob(f".{Path(t).name}.*.tmp"):
                stale.unlink(missing_ok=True)
        listed = sorted(ours | {t.as_posix() for t in targets})
        files.write_text_atomic(self.manifest, json.dumps({"maker": maker, "files": listed}, indent=1))



def describe(maker: dict, other: dict | None = None) -> str:
    """A manifest's maker in words: the family and checkpoint, the sampling where it is not the
    default; `other` a maker it is compared with (the same file rewritten since: said)."""
    text = f"{maker.get('model')} with {maker.get('weights') or 'no weights'}"
    if other is not None and other.get("weights") == maker.get("weights") and other != maker:
        same = {k for k in maker if k != "checkpoint" and maker.get(k) == other.get(k)}
        text += " (an earlier version of that file)" if same == set(maker) - {"checkpoint"} else ""
    extras = [f"{maker['samples']} samples" if isinstance(maker.get("samples"), int) and maker["samples"] > 1 else "",
              f"hints {maker['hints']}" if maker.get("hints") else "",
              f"at {maker['image_size']} px" if maker.get("image_size") else ""]
    return text + "".join(f", {e}" for e in extras if e)
