"""Examples of poisoncert (a package, so that ``examples.custom_model.net:make_model`` can be
named in a config and imported from the repository root)."""
