from newbie.ui import theme


def test_literal_keeps_prompts_out_of_markdown():
    assert theme.literal("<n>$character_1$</n> red_hair_") == r"\<n\>\$character\_1\$\</n\> red\_hair\_"
    assert theme.literal("plain words") == "plain words"


def test_page_css_styles_the_hero_and_the_gallery():
    css = theme.page_css()
    assert css.startswith("\n<style>") and css.rstrip().endswith("</style>")
    assert ".st-key-hero" in css and ".st-key-gallery" in css and "radial-gradient" in css
    assert theme.page_css() == css  # the star field is seeded: the same sky on every rerun
