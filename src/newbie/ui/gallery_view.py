"""The gallery half of the page: the hero (live preview, or the chosen image with its recipe and actions)
and the grid of thumbnails. Streamlit widgets only; the data lives in gallery.py and job.py."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from newbie.ui import form, theme
from newbie.ui.gallery import Entry, Gallery
from newbie.ui.job import Job

state = st.session_state
GRID_COLUMNS = 6
PAGE = 48  # thumbnails shown before "Show more"


def use_settings(gallery: Gallery, entry_id: int) -> None:
    entry = gallery.get(entry_id)
    if entry is not None and entry.recipe is not None:
        state.update(form.from_recipe(entry.recipe))


def delete_entry(gallery: Gallery, entry_id: int) -> None:
    gallery.delete(entry_id)
    state.confirm_delete = None
    if state.get("selected") == entry_id:
        state.selected = None


def collect(job: Job | None) -> bool:
    """Once per finished job: its message becomes the notice and its newest image the hero."""
    if job is None or job.active or state.get("collected") is job:
        return False
    state.collected = job
    kind = {"done": "success", "cancelled": "info"}.get(job.status, "error")
    state.notice = (kind, job.message)
    if job.entry_ids:
        state.selected = job.entry_ids[-1]
    return True


def hero(gallery: Gallery) -> None:
    job = state.get("job")
    if job is not None and job.active:
        p = job.progress
        st.progress(
            p.step / p.steps if p.steps else 0.0, text=p.line() if p.step else "encoding the prompt ..."
        )
        if p.preview is not None:
            st.image(p.preview, caption="live preview (latent projection)", width="stretch")
        st.button("Cancel", on_click=job.cancel, disabled=job.cancelling)
        return
    if collect(job):  # only inside the polling fragment: the main run collected before drawing
        st.rerun(scope="app")  # the gallery below must show the new image too
    entry = gallery.get(state.selected) if state.get("selected") else None
    entry = entry or next(iter(gallery.list(limit=1)), None)
    if entry is None:
        st.markdown("#### The sky is empty")
        st.caption("Compose a prompt and press Generate: every image is kept here with its recipe.")
        return
    if entry.problem:
        broken(gallery, entry)
        return
    st.image(str(entry.image_path), width="stretch")
    detail(gallery, entry)


def delete_buttons(gallery: Gallery, entry: Entry, column) -> None:
    if state.get("confirm_delete") == entry.id:
        st.warning("Delete this image and its recipe for good?")
        yes, no = st.columns(2)
        yes.button("Yes, delete", on_click=delete_entry, args=(gallery, entry.id), type="primary")
        no.button("Keep it", on_click=lambda: state.update(confirm_delete=None))
    else:
        column.button("Delete", on_click=lambda: state.update(confirm_delete=entry.id))


def broken(gallery: Gallery, entry: Entry) -> None:
    """An entry whose PNG is gone or whose recipe is damaged: said so, and removable from here."""
    with st.container(key="detail"):
        st.warning(f"Image #{entry.id} cannot be shown: {entry.problem}.")
        delete_buttons(gallery, entry, st)


def detail(gallery: Gallery, entry: Entry) -> None:
    r = entry.recipe
    with st.container(key="detail"):
        st.caption(f"#{entry.id} · {datetime.fromtimestamp(entry.created):%Y-%m-%d %H:%M:%S}")
        st.caption(theme.literal(r.prompt if len(r.prompt) <= 240 else r.prompt[:240] + " ..."))
        peak = f"{entry.peak_gib:.2f} GiB ({entry.peak_kind})" if entry.peak_gib is not None else "unknown"
        st.caption(
            f"{r.width}x{r.height} · seed {r.seed} · {r.steps} steps {r.sampler} · CFG {r.cfg:g} · "
            f"{entry.seconds:.1f}s · peak {peak} · {r.dtype}"
        )
        a, b, c = st.columns(3)
        a.button("Use these settings", on_click=use_settings, args=(gallery, entry.id))
        b.download_button(
            "Download PNG",
            data=entry.image_path.read_bytes(),
            file_name=entry.image_path.name,
            mime="image/png",
            on_click="ignore",
        )
        delete_buttons(gallery, entry, c)
        with st.expander("Recipe"):
            st.json(r.to_json())


def gallery_grid(gallery: Gallery) -> None:
    with st.container(key="gallery"):
        head, search = st.columns([3, 2], vertical_alignment="bottom")
        head.markdown(f"### Gallery · {gallery.count()}")
        query = search.text_input("Search prompts", key="search", placeholder="red_hair, night sky ...")
        entries = gallery.list(query, limit=state.get("limit", PAGE))
        if not entries:
            st.caption("No images match." if query else "No images yet.")
        for row in range(0, len(entries), GRID_COLUMNS):
            cols = st.columns(GRID_COLUMNS)
            row_entries = entries[row : row + GRID_COLUMNS]  # the last row may be short
            for col, entry in zip(cols, row_entries, strict=False):
                picture = entry.picture if entry.recipe is not None else None
                if picture is not None:
                    col.image(str(picture), width="stretch")
                else:
                    col.caption(f"#{entry.id}: {entry.problem or 'no picture'}")
                col.button(
                    f"#{entry.id}",
                    key=f"view_{entry.id}",
                    width="stretch",
                    on_click=lambda i=entry.id: state.update(selected=i, confirm_delete=None),
                )
        if len(entries) == state.get("limit", PAGE):
            st.button("Show more", on_click=lambda: state.update(limit=state.get("limit", PAGE) * 2))
