"""``surge up``: start, watch and restart every process; the admin API; ``surge status``."""
