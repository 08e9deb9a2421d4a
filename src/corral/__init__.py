"""corral: run large language models on a cluster of your own machines."""

__version__ = "0.1.0"
