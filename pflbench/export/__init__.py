"""A run exported to run elsewhere: ``flower`` writes a method as a Flower app (ServerApp and
ClientApp) that drives the same engine. One layer above ``federation``, beside
``orchestration``."""
