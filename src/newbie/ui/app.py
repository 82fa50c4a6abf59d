"""The Streamlit page of `newbie ui`: widgets wired to the plain modules of newbie.ui. No logic lives here.

Layout: settings in the sidebar; the composer and Generate on the left; the hero on the right (the live
preview while a generation runs, otherwise the chosen gallery image with its recipe and actions); the
gallery grid below. Run it through `newbie ui`, which sets the theme and the settings (see settings.py).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path

import streamlit as st
import torch

from newbie.errors import NewbieError
from newbie.pipeline.request import Settings, parse_size
from newbie.ui import compose, form, theme, workflows
from newbie.ui import gallery_view as views
from newbie.ui.gallery import Gallery
from newbie.ui.job import Job
from newbie.ui.memory import apply_plan, cpu_memory_line, gpu_total_gib, plan_view
from newbie.ui.preview import Previewer
from newbie.ui.settings import UISettings
from newbie.ui.sizes import size_label, trained_sizes
from newbie.ui.styles import STYLE_PRESETS, apply_style, preset_tags

log = logging.getLogger("newbie.ui")
state = st.session_state


@st.cache_resource(show_spinner="Loading the model ...", max_entries=1)  # one model in memory at a time
def load_model(model: str | None, device: str | None, dtype: str):
    import newbie
    from newbie.pipeline.load import warm_up

    pipe = newbie.load(model, device=device, dtype=dtype)
    if pipe.device.type == "cuda":
        warm_up(pipe)  # the first picture's one-time GPU costs (first encode, first step) paid while loading
    threads = UISettings.from_env().cpu_threads
    if pipe.device.type == "cpu" and threads:
        torch.set_num_threads(threads)  # `newbie ui` leaves a core to the server (settings.cpu_threads)
    return pipe


@st.cache_resource(show_spinner=False)
def previewer_for(model: str | None, device: str | None, dtype: str, data_dir: str) -> Previewer:
    pipe = load_model(model, device, dtype)
    return Previewer(pipe.codec, Path(data_dir) / "preview" / f"{pipe.model_hash[:16]}.npz")


# -- callbacks: they run before the page, so they may set widget values --


def roll_seed() -> None:
    state.seed = str(secrets.randbelow(2**32))


def preset_changed() -> None:
    state.style_tags = preset_tags(state.style_preset)


def forget_recipe_hires() -> None:
    state.hires_recipe = None  # a scale picked by hand replaces the recipe's exact hires target


def forget_recipe_inputs() -> None:
    state.init_image_path, state.mask_path = "", ""


def edit_expanded(xml: str) -> None:
    state.prompt, state.mode = xml, "Text"


# -- page parts --


def sidebar(pipe, sizes: list[str]) -> None:
    with st.sidebar:
        st.markdown("### ✦ Settings")
        st.text_area("Negative prompt", key="negative", height=80)
        st.selectbox("Style preset", list(STYLE_PRESETS), key="style_preset", on_change=preset_changed)
        st.text_area(
            "Style tags",
            key="style_tags",
            height=80,
            help="added to <general_tags><style> of an XML prompt, appended to a text prompt",
        )
        st.selectbox("Size", sizes, key="size", help="the sizes this model was trained at")
        st.number_input("Steps", step=1, key="steps", **form.bounds("steps"))
        st.number_input("CFG", step=0.5, key="cfg", **form.bounds("cfg"))
        st.selectbox("Sampler", list(Settings.rule("sampler").choices), key="sampler")
        seed_col, dice_col = st.columns([4, 1], vertical_alignment="bottom")
        seed_col.text_input("Seed", key="seed", placeholder="random")
        dice_col.button(":material/casino:", key="dice", on_click=roll_seed, help="a new random seed")
        st.selectbox(
            "Precision",
            form.DTYPE_CHOICES,
            key="dtype",
            help="DiT compute dtype; auto = bf16 on a GPU, fp32 on a CPU",
        )
        if pipe.device.type == "cuda":
            st.number_input("GPU memory (GiB)", min_value=1.0, max_value=1024.0, step=1.0, key="vram_gib")
            width, height = parse_size(state.size)
            view = plan_view(state.vram_gib, width, height, pipe.component_sizes)  # the loaded weights'
            st.caption(
                f"Memory plan for {pipe.folder.name} at {width}x{height}: **{view.text}**",
                help=view.detail or None,
            )
        else:
            st.caption(cpu_memory_line(pipe))
        artist_workflows()
        if state.get("advanced"):
            extra = ", ".join(
                f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in state.advanced.items()
            )
            st.caption(f"From the recipe: {extra}")
            st.button("Back to the model's defaults", on_click=lambda: state.pop("advanced", None))
        st.caption(f"Model: {pipe.folder.name} · {pipe.device.type} · {pipe.dtypes['dit']}")


def artist_workflows() -> None:
    """Hires, adapters, img2img and inpainting; the values go through form.settings like the rest."""
    with st.expander("Artist workflows"):
        st.toggle("Hires pass", key="hires", help="generate, upscale, then refine at the larger size")
        st.selectbox(
            "Hires scale",
            workflows.HIRES_SCALES,
            key="hires_scale",
            format_func=lambda s: f"{s:g}x",
            on_change=forget_recipe_hires,
            disabled=not state.hires,
        )
        if state.hires and state.get("hires_recipe"):
            h = state.hires_recipe
            st.caption(f"From the recipe: hires {h.get('width')}x{h.get('height')}, {h.get('upscaler')}")
        st.text_area(
            "LoRA adapters",
            key="loras",
            height=80,
            placeholder="output/my_style/:0.8",
            help="one adapter per line: a .safetensors file or trainer folder, optionally :strength",
        )
        st.checkbox("Fuse adapters into the weights", key="fuse_loras", help="no per-step cost")
        st.file_uploader("Init image (img2img)", type=workflows.IMAGE_TYPES, key="init_upload")
        st.slider(
            "Strength",
            min_value=0.0,
            max_value=1.0,
            step=0.05,
            key="strength",
            help="how far the init image is noised: 0 keeps it, 1 ignores it (1.0 suits inpainting)",
        )
        st.file_uploader("Mask (white = repaint)", type=workflows.IMAGE_TYPES, key="mask_upload")
        st.number_input("Mask feather (px)", min_value=0, max_value=256, step=1, key="mask_feather")
        recorded = [p for p in (state.get("init_image_path"), state.get("mask_path")) if p]
        if recorded:
            st.caption("From the recipe: " + ", ".join(recorded))
            st.button("Drop the recipe's images", on_click=forget_recipe_inputs)


def form_values(cfg: UISettings | None = None) -> dict:
    """The session state plus the uploads opened as in-memory PIL images (LoRA lines confined to
    DATA/adapters/ when the page is served beyond this machine)."""
    values = {
        **state.to_dict(),
        "init_image": workflows.open_upload(state.get("init_upload"), "init image"),
        "mask": workflows.open_upload(state.get("mask_upload"), "mask"),
    }
    if cfg is not None and cfg.remote:
        values["loras"] = workflows.confine_loras(values.get("loras") or "", cfg.data_dir)
        values["init_image_path"] = values["mask_path"] = ""  # server paths: only uploads come in
    return values


def access_granted(cfg: UISettings) -> bool:
    """With an access key: the page shows nothing until the link carries ?key=KEY (kept for the session)."""
    if not cfg.access_key or state.get("access_ok"):
        return True
    given = str(st.query_params.get("key", ""))
    if hmac.compare_digest(given.encode(), cfg.access_key.encode()):
        state.access_ok = True
        return True
    st.error("This page needs its access key: open the link `newbie ui` printed (…/?key=...).")
    return False


def gemma_expander(pipe) -> None:
    """The button that lets the model's own Gemma write the XML instead of the rules (shown below it)."""
    job = state.get("job")
    cols = st.columns([3, 2], vertical_alignment="bottom")
    cols[1].text_input("Gemma seed", key="gemma_seed", placeholder="empty: greedy")
    clicked = cols[0].button(
        "Write with Gemma",
        disabled=(job is not None and job.active) or not state.describe.strip(),
        help="the model's text encoder writes the XML; without it, the rules below do",
    )
    if clicked:
        try:
            with st.spinner("Gemma is writing the XML ..."):
                state.gemma_expansion = compose.expand_with_gemma(
                    pipe, state.describe, state.get("gemma_seed", "")
                )
        except (NewbieError, ValueError) as e:
            st.error(str(e))


def composer(pipe) -> str:
    """The three prompt modes (all rendered, so switching loses nothing); returns the active mode's prompt."""
    tabs = st.tabs(list(compose.MODES), key="mode", on_change="rerun")
    with tabs[0]:
        st.text_area(
            "Prompt",
            key="prompt",
            height=230,
            placeholder="a tag list, a sentence, or an XML prompt (<character_1> ... )",
        )
    with tabs[1]:
        cards_xml = structured_editor()
    with tabs[2]:
        st.text_area(
            "Description",
            key="describe",
            height=110,
            placeholder="two girls under a night sky, one with long red hair on the left ...",
        )
        expanded = ""
        gemma_expander(pipe)
        written = state.get("gemma_expansion")
        if written is not None and written.text == state.describe:
            expanded = written.xml
            st.caption(written.line)
            for w in written.warnings:
                st.warning(w)
        elif state.describe.strip():
            try:
                expanded = compose.expand_to_xml(state.describe)
            except ValueError as e:
                st.error(str(e))
        if expanded:
            st.code(expanded, language="xml")
            st.button("Edit as XML", on_click=edit_expanded, args=(expanded,))
    return {"Text": state.prompt, "Structured": cards_xml, "Expand": expanded}[state.mode or "Text"]


def structured_editor() -> str:
    st.number_input("Characters", min_value=1, max_value=compose.MAX_CARDS, key="cards")
    cards = []
    for i in range(state.cards):
        with st.container(border=True):
            st.markdown(f"**character_{i + 1}**")
            cols = st.columns(2)
            cards.append(
                {
                    f: cols[k % 2].text_input(compose.card_label(f), key=f"card{i}_{f}")
                    for k, f in enumerate(compose.CARD_FIELDS)
                }
            )
    with st.container(border=True):
        st.markdown("**general tags**")
        cols = st.columns(2)
        general = {
            f: cols[k % 2].text_input(f, key=f"general_{f}")
            for k, f in enumerate(compose.GENERAL_CARD_FIELDS)
        }
    xml = compose.cards_to_xml(cards, general)
    st.code(xml, language="xml")
    return xml


def show_check(prompt: str) -> compose.PromptCheck | None:
    if not prompt.strip():
        st.caption("Write a prompt to begin.")
        return None
    check = compose.check_prompt(prompt)
    if check.error:
        st.error(check.error)
    elif check.warnings:
        st.warning("\n\n".join(check.warnings))
    else:
        st.caption(f"✓ {check.kind} prompt, no lint warnings")
    return check


def start_job(cfg: UISettings, gallery: Gallery, prompt: str, check) -> None:
    try:
        if check is None or check.error:
            raise NewbieError(check.error if check else "the prompt is empty")
        values = form_values(cfg)
        settings, dtype = form.settings(values), form.dtype(values)
        pipe = load_model(cfg.model, cfg.device, dtype)
        apply_plan(
            pipe,
            state.vram_gib,
            settings.width or pipe.spec.sampling.width,
            settings.height or pipe.spec.sampling.height,
        )
        final = apply_style(prompt, state.style_tags)
        req = pipe.request(settings.replace(prompt=final))  # instant errors, before the thread
        previewer = previewer_for(cfg.model, cfg.device, dtype, str(cfg.data_dir))
        kwargs = form.generate_kwargs(settings)
        state.job = Job(pipe, final, settings.negative, kwargs, gallery, previewer).start()
        state.notice = ("warning", "; ".join(req.warnings)) if req.warnings else None
    except NewbieError as e:
        state.notice = ("error", str(e))


def main() -> None:
    st.set_page_config(page_title="newbie · starry night", page_icon="✦", layout="wide")
    st.html(theme.page_css())
    st.html(theme.LIVE_TYPING_JS, unsafe_allow_javascript=True)
    cfg = UISettings.from_env()
    if not access_granted(cfg):
        return
    gallery = Gallery(cfg.data_dir)
    pipe = load_model(cfg.model, cfg.device, state.get("dtype", "auto"))
    sizes = [size_label(w, h) for w, h in trained_sizes(pipe.spec)]
    for key, value in {
        **form.defaults(pipe.spec),
        "cards": 1,
        "vram_gib": float(round(gpu_total_gib() or 24.0)),
    }.items():
        state.setdefault(key, value)
    if state.size not in sizes:
        sizes.append(state.size)  # a recipe's size outside the trained list stays selectable
    views.collect(state.get("job"))
    sidebar(pipe, sizes)

    st.markdown(
        '<h1 class="newbie-title">✦ newbie · starry night</h1>'
        '<p class="newbie-subtitle">NewBie image Exp0.1, composed under the stars</p>',
        unsafe_allow_html=True,
    )
    left, right = st.columns([5, 7], gap="large")
    with left:
        with st.container(key="composer"):
            prompt = composer(pipe)
            check = show_check(prompt)
        job = state.get("job")
        running = job is not None and job.active
        if st.button("Generate", type="primary", disabled=running, width="stretch"):
            start_job(cfg, gallery, prompt, check)
            st.rerun()  # draw the page again with Generate disabled and the progress showing
        notice = state.get("notice")
        if notice:
            getattr(st, notice[0])(notice[1])
    with right, st.container(key="hero"):
        job = state.get("job")
        if job is not None and job.active:
            st.fragment(run_every=0.5)(views.hero)(gallery)  # polls the job while it runs
        else:
            views.hero(gallery)
    st.divider()
    views.gallery_grid(gallery)


try:
    main()
except NewbieError as e:
    st.error(str(e))
except Exception as e:  # a readable line on the page, the traceback in the server log
    log.exception("page failed")
    st.error(f"something went wrong: {type(e).__name__}: {e}")
