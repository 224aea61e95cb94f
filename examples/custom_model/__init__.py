"""Your own model in a config: ``net.py`` (the factory) and ``config.yaml`` (the run) in this
folder; docs/predict.md ("Your own model") says what a factory must do and how to run it."""
