"""newbie: an open inference engine for NewBie image Exp0.1."""

__version__ = "0.1.0"


def load(*args, **kwargs):
    """Load a model folder -> Pipeline (see newbie.pipeline.pipeline.load)."""
    from newbie.pipeline.pipeline import load as _load

    return _load(*args, **kwargs)


__all__ = ["load", "__version__"]
