"""Reaching model files where they live: byte ranges over HTTP (Hugging Face
``resolve`` URLs and any server that answers ``Range`` requests)."""
