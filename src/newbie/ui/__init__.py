"""`newbie ui`: a Streamlit web gallery over the same `Pipeline.generate()` as the CLI and the API.

The logic lives in plain modules that import no Streamlit (gallery, sizes, styles, compose, form, preview,
job, memory), so it is tested without a browser; `app.py` is the thin page that wires them to widgets.
"""
