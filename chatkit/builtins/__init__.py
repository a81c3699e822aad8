"""chatkit's own features, each an ordinary plugin (see ``chatkit.plugins``)."""
