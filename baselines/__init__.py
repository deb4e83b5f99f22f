"""The baselines, imported as ``pflbench_baselines`` and registered through the
``pflbench.methods`` entry points exactly as a third party's plugin would be."""
