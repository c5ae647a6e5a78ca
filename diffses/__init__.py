"""DiffSES shared core: environments, run folders, configuration, stages."""
