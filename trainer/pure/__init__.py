"""The pure half of the trainer: everything the app may import.

Nothing under this package imports mlx, mlx_lm, datasets, numpy or textual (a test imports
each module with those made unimportable). The app (``tui/``) imports only from here; the
training engine beside this package imports from here too, so each contract (the run folder,
run states, metric names, the trainer's command line and exit codes) is written once.
"""
