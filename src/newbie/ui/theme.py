"""The look of the page (a night sky behind the work) and the small script that makes typing live."""

from __future__ import annotations

import random
import re

NIGHT = "#060a1c"


def literal(text: str) -> str:
    """Text shown through Markdown exactly as written: $character_1$ is not math, _x_ not italics."""
    return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|$~])", r"\\\1", text)


def _star_layer(seed: int, tile: int, count: int, size: float, alpha: float) -> tuple[str, str]:
    """One repeating tile of stars as CSS radial gradients: (background-image part, background-size part)."""
    rng = random.Random(seed)
    dots = []
    for _ in range(count):
        x, y = rng.uniform(0, 100), rng.uniform(0, 100)
        a = alpha * rng.uniform(0.45, 1.0)
        tint = rng.choice(("255,255,255", "200,215,255", "255,236,200"))
        dots.append(
            f"radial-gradient({size}px {size}px at {x:.1f}% {y:.1f}%, "
            f"rgba({tint},{a:.2f}) 50%, transparent 100%)"
        )
    return ", ".join(dots), ", ".join([f"{tile}px {tile}px"] * count)


def page_css() -> str:
    layers = [
        _star_layer(1, 280, 14, 1.2, 0.75),
        _star_layer(2, 470, 10, 1.8, 0.9),
        _star_layer(3, 830, 6, 2.6, 1.0),
    ]
    twinkle = _star_layer(4, 610, 9, 2.2, 1.0)
    images = ", ".join(img for img, _ in layers)
    sizes = ", ".join(size for _, size in layers)
    return f"""
<style>
.stApp {{
  background-color: {NIGHT};
  background-image: {images},
    radial-gradient(ellipse 70% 45% at 78% 8%, rgba(92, 72, 170, 0.30), transparent 70%),
    radial-gradient(ellipse 60% 50% at 10% 95%, rgba(30, 90, 160, 0.22), transparent 70%),
    linear-gradient(180deg, #0b1030 0%, {NIGHT} 60%, #03040c 100%);
  background-size: {sizes}, 100% 100%, 100% 100%, 100% 100%;
  background-attachment: fixed;
}}
.stApp::before {{
  content: ""; position: fixed; inset: 0; pointer-events: none; z-index: 0;
  background-image: {twinkle[0]}; background-size: {twinkle[1]};
  animation: newbie-twinkle 5s ease-in-out infinite alternate;
}}
@keyframes newbie-twinkle {{ from {{ opacity: 0.15; }} to {{ opacity: 0.95; }} }}
[data-testid="stAppViewContainer"] {{ z-index: 1; }}  /* the page above the twinkling layer */
header[data-testid="stHeader"] {{ background: transparent; }}
section[data-testid="stSidebar"] {{
  background: rgba(9, 13, 36, 0.82); backdrop-filter: blur(8px);
  border-right: 1px solid rgba(160, 175, 255, 0.12);
}}
.block-container {{ padding-top: 2.2rem; max-width: 1500px; }}
h1.newbie-title {{
  font-family: Georgia, 'Times New Roman', serif; font-weight: 400; letter-spacing: 0.12em;
  font-size: 1.7rem; margin: 0; color: #f1f3ff; text-shadow: 0 0 18px rgba(170, 185, 255, 0.55);
}}
p.newbie-subtitle {{ color: #9aa3cf; margin: 0.1rem 0 0.8rem 0; letter-spacing: 0.04em; }}
.st-key-hero [data-testid="stImage"] img {{
  border-radius: 14px; image-rendering: auto;
  box-shadow: 0 0 0 1px rgba(255, 255, 255, 0.08), 0 0 70px rgba(125, 145, 255, 0.28);
}}
.st-key-gallery [data-testid="stImage"] img {{
  border-radius: 8px; transition: transform 0.2s ease, box-shadow 0.2s ease;
  box-shadow: 0 0 0 1px rgba(255, 255, 255, 0.06);
}}
.st-key-gallery [data-testid="stImage"] img:hover {{
  transform: scale(1.03); box-shadow: 0 0 24px rgba(243, 201, 105, 0.35);
}}
.st-key-composer, .st-key-detail {{
  background: rgba(14, 20, 52, 0.55); border-radius: 14px; padding: 0.9rem 1rem;
  border: 1px solid rgba(160, 175, 255, 0.12);
}}
[data-testid="stBaseButton-primary"], [data-testid="stBaseButton-primary"] p {{
  color: #17132e; font-weight: 600;
}}
[data-testid="stBaseButton-primary"]:not(:disabled) {{ box-shadow: 0 0 26px rgba(243, 201, 105, 0.35); }}
.st-key-composer textarea {{ font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: 0.86rem; }}
</style>
"""


# Streamlit commits a text area on blur or Ctrl+Enter, a text input on Enter. This commits the composer's
# fields after a short pause in typing, so lint warnings and the structured editor's XML follow the typing.
LIVE_TYPING_JS = """
<script>
(function () {
  if (window.__newbieLiveTyping) { return; }
  window.__newbieLiveTyping = true;
  let timer = null;
  document.addEventListener("input", function (ev) {
    const el = ev.target;
    if (!el || !el.closest || !el.closest(".st-key-composer")) { return; }
    const area = el.tagName === "TEXTAREA";
    if (!area && !(el.tagName === "INPUT" && el.type === "text")) { return; }
    clearTimeout(timer);
    timer = setTimeout(function () {
      el.dispatchEvent(new KeyboardEvent("keydown", {
        key: "Enter", code: "Enter", keyCode: 13, which: 13, ctrlKey: area,
        bubbles: true, cancelable: true}));
    }, 650);
  }, true);
})();
</script>
"""
