"""Every image the page makes, kept with its recipe: a SQLite index plus PNG files under one data folder.

Layout of the data folder:
    gallery.sqlite3       one row per image (recipe JSON, prompt for search, time, seconds, peak memory)
    images/NNNNNN-SEED.png  the image with its recipe in the PNG text chunks (save_png)
    thumbs/NNNNNN.jpg     a small copy for the grid
An image is added in one transaction: the row is committed only after both files are written, so a crash
or a failed write leaves the earlier entries as they were and no row without its file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from newbie.errors import NewbieError
from newbie.pipeline.images import save_png
from newbie.pipeline.recipe import Recipe

DB_NAME = "gallery.sqlite3"
THUMB_SIDE = 320
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,      -- unix time
    image TEXT NOT NULL,        -- path relative to the data folder
    thumb TEXT NOT NULL,
    prompt TEXT NOT NULL,       -- copied out of the recipe for LIKE search
    recipe TEXT NOT NULL,       -- Recipe.to_json()
    seconds REAL NOT NULL,      -- wall time of the generation call that made it
    peak_gib REAL,              -- peak memory during that call, NULL if unknown
    peak_kind TEXT NOT NULL     -- what peak_gib measures: 'cuda allocated' or 'process RSS'
)
"""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "newbie" / "gallery"


@dataclass
class Entry:
    id: int
    created: float
    image_path: Path
    thumb_path: Path
    recipe: Recipe | None  # None: the row's recipe cannot be read (see problem)
    seconds: float
    peak_gib: float | None
    peak_kind: str
    recipe_error: str | None = None

    @property
    def prompt(self) -> str:
        return self.recipe.prompt if self.recipe else ""

    @property
    def problem(self) -> str | None:
        """Why this entry cannot be shown whole (its PNG deleted, its recipe damaged), or None. One bad
        entry is shown as such, with its Delete button; it never takes the page down."""
        if not self.image_path.is_file():
            return f"the image file {self.image_path.name} is missing"
        if self.recipe is None:
            return f"the recipe is unreadable ({self.recipe_error})"
        return None

    @property
    def picture(self) -> Path | None:
        """What the grid shows: the thumbnail, else the PNG itself, else nothing."""
        return next((p for p in (self.thumb_path, self.image_path) if p.is_file()), None)


class Gallery:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        db = self.root / DB_NAME
        if db.is_file() and db.stat().st_size == 0:  # truncated: starting empty would hide every image
            raise NewbieError(
                f"the gallery index {db} is empty (0 bytes): restore it from a backup, or move it away to "
                "start a new gallery (the PNGs in images/ keep their recipes)"
            )
        try:
            (self.root / "images").mkdir(parents=True, exist_ok=True)
            (self.root / "thumbs").mkdir(exist_ok=True)
            with closing(self._connect()) as con, con:
                con.execute(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise NewbieError(f"cannot use the gallery folder {self.root} ({e})") from None

    def _connect(self) -> sqlite3.Connection:
        # One short-lived connection per call: the page and the generation thread both use the gallery.
        return sqlite3.connect(self.root / DB_NAME, timeout=30)

    def add(self, image, recipe: Recipe, *, seconds: float, peak_gib: float | None, peak_kind: str) -> Entry:
        created = time.time()
        with closing(self._connect()) as con:
            cur = con.execute(
                "INSERT INTO images (created, image, thumb, prompt, recipe, seconds, peak_gib, peak_kind) "
                "VALUES (?, '', '', ?, ?, ?, ?, ?)",
                (created, recipe.prompt, recipe.to_json(), seconds, peak_gib, peak_kind),
            )
            new_id = cur.lastrowid
            image_rel, thumb_rel = f"images/{new_id:06d}-{recipe.seed}.png", f"thumbs/{new_id:06d}.jpg"
            try:
                save_png(image, recipe, self.root / image_rel)
                _save_thumb(image, self.root / thumb_rel)
                con.execute(
                    "UPDATE images SET image = ?, thumb = ? WHERE id = ?", (image_rel, thumb_rel, new_id)
                )
                con.commit()
            except BaseException:
                con.rollback()
                (self.root / image_rel).unlink(missing_ok=True)
                (self.root / thumb_rel).unlink(missing_ok=True)
                raise
        return self.get(new_id)

    def list(self, search: str = "", limit: int = 60) -> list[Entry]:
        """Newest first; `search` matches anywhere in the prompt, case-insensitively, % and _ literally."""
        pattern = "%" + search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with closing(self._connect()) as con:
            rows = con.execute(
                "SELECT * FROM images WHERE image != '' AND prompt LIKE ? ESCAPE '\\' "
                "ORDER BY created DESC, id DESC LIMIT ?",
                (pattern, limit),
            ).fetchall()
        return [self._entry(r) for r in rows]

    def count(self) -> int:
        with closing(self._connect()) as con:
            return con.execute("SELECT COUNT(*) FROM images WHERE image != ''").fetchone()[0]

    def get(self, entry_id: int) -> Entry | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM images WHERE id = ? AND image != ''", (entry_id,)).fetchone()
        return self._entry(row) if row else None

    def delete(self, entry_id: int) -> bool:
        entry = self.get(entry_id)
        if entry is None:
            return False
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM images WHERE id = ?", (entry_id,))
        # Files go after the row: a crash in between leaves an orphan file, never a row without its image.
        entry.image_path.unlink(missing_ok=True)
        entry.thumb_path.unlink(missing_ok=True)
        return True

    def _entry(self, row: tuple) -> Entry:
        id_, created, image, thumb, _prompt, recipe, seconds, peak_gib, peak_kind = row
        try:
            parsed, error = Recipe.from_json(recipe), None
        except Exception as e:  # a damaged row: shown as such, with its Delete button
            parsed, error = None, f"{type(e).__name__}: {str(e)[:120]}"
        return Entry(
            id_,
            created,
            self.root / image,
            self.root / thumb,
            parsed,
            seconds,
            peak_gib,
            peak_kind,
            error,
        )


def _save_thumb(image, path: Path) -> None:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    thumb.save(path, format="JPEG", quality=90)
