"""Inference engines corral installs, pins and launches: llama.cpp and vLLM.

One module per backend behind the small interface in ``base``: what to
install, where installed versions live, the command line and environment of
a launch, how to tell it is ready, and what memory it reports at start-up.
No server or worker code lives here; the worker uses it.
"""
