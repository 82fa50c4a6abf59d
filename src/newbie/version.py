"""The package version, in a module of its own: the recipe in every PNG and the API report it, and they must
not import the `newbie` façade (which imports the pipeline) to read it."""

__version__ = "0.1.0"
