"""Task metrics, reward scoring and personalization gain."""
