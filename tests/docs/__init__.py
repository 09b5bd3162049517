"""Tests that run the code examples of the README and docs/."""
