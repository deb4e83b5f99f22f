"""Task cards (YAML), shipped inside the package as ``pflbench.cards``."""
