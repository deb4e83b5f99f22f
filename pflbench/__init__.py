"""pflbench: personalized federated fine-tuning of language models over wireless uplinks."""

__version__ = "0.1.0"
