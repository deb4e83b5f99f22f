"""Run records, the on-disk store, leaderboard tables."""
