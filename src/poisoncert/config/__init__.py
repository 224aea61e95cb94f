"""Experiment configuration: typed sections (``sections``), YAML files and dotted overrides
(``files``). See ``poisoncert.config.files`` for the file layout; the ``training`` section is
``poisoncert.training.TrainConfig``."""

from poisoncert.config import files, sections
from poisoncert.config.files import *  # noqa: F403
from poisoncert.config.sections import *  # noqa: F403
from poisoncert.training.settings import TrainConfig

__all__ = [*sections.__all__, *files.__all__, "TrainConfig"]
