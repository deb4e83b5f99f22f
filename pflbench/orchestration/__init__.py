"""What drives the engine: suite sweeps (``sweep``) and the communication budget's measurement
(``budget``). One layer above ``federation``; the CLI calls them."""
