"""Configuration: the typed settings of every concern, loaded from ``surge.toml``."""
